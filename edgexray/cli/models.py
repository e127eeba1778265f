"""`edgexray models`: the models shipped with edgexray, where they are and what they are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import user_errors

GENERAL_CARD = "MODEL_CARD.md"  # the card of a model without one of its own (NAME.md)


def shipped() -> list[dict]:
    """Each shipped .tflite with its sidecar's facts and its card."""
    from edgexray.edge_runtime import REFERENCE_MODEL
    from edgexray.edge_runtime.sidecar import load_sidecar

    found = []
    for model in sorted(REFERENCE_MODEL.parent.glob("*.tflite")):
        sidecar = load_sidecar(model)
        own_card = model.with_suffix(".md")
        card = own_card if own_card.is_file() else model.with_name(GENERAL_CARD)
        spec = sidecar["input"]
        found.append(
            {
                "path": str(model),
                "default": model == REFERENCE_MODEL,
                "sha256": sidecar["sha256"],
                "method": sidecar.get("method", "unknown"),
                "input": f"{spec['width']}x{spec['height']} {spec['normalization']}",
                "threshold": sidecar["threshold"],
                "card": str(card) if card.is_file() else None,
            }
        )
    return found


@user_errors
def command(
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the list as JSON (for scripts).")
    ] = False,
):
    """List the shipped models: path, sha256, method, input, threshold and model card."""
    import json

    models = shipped()
    if json_output:
        typer.echo(json.dumps(models, indent=2))
        return
    for model in models:
        typer.echo(f"{Path(model['path']).name}{' (default)' if model['default'] else ''}")
        for key in ("path", "sha256", "method", "input", "threshold", "card"):
            typer.echo(f"  {key + ':':11s}{model[key]}")
