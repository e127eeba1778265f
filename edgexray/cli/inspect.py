"""`edgexray inspect`: what a model file is, in one screen (or as JSON for scripts)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .common import fail, model_or_shipped, user_errors
from .options import Model


@user_errors
def command(
    file: Annotated[
        Path | None, typer.Argument(metavar="MODEL", help="The model (or give --model).")
    ] = None,
    model: Model = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON, for scripts.")] = False,
):
    """Show what a model file is: name, version, labels, input and outputs with their
    quantization, threshold and where it came from, calibration, scope statistics,
    operators, size and sha256 (the model's identity, which calibration keeps)."""
    from edgexray.export.metadata import describe, summary_lines

    if file is not None and model is not None:
        raise fail(f"give the model once: --model {model} or {file}")
    report = describe(model_or_shipped(model or file))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for line in summary_lines(report):
        typer.echo(line)
