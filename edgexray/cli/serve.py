"""`edgexray serve`: the DICOM node, with the shipped model unless --model says otherwise.

Its options are NodeConfig's fields, as the device's `infer.py serve` has them."""

from __future__ import annotations

import logging

import typer

from edgexray.edge_runtime.node.config import NodeConfig
from edgexray.edge_runtime.options import options_of

from .common import model_or_shipped, user_errors
from .options import Model, from_settings

NODE_OPTIONS = tuple(f.name for f in options_of(NodeConfig) if f.name != "model")


@user_errors
@from_settings(NodeConfig, *NODE_OPTIONS)
def command(model: Model = None, **settings):
    """Run the DICOM node: a Storage SCP that classifies each film it receives and appends
    its record to STATE/results.jsonl (and sends a Structured Report to --pacs)."""
    from edgexray.edge_runtime.node.logs import quiet_libraries
    from edgexray.edge_runtime.node.server import serve

    # A service's log: every line with its time.
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", force=True)
    logging.getLogger("edgexray").setLevel(logging.INFO)
    quiet_libraries()
    raise typer.Exit(serve(NodeConfig(model=model_or_shipped(model), **settings)))
