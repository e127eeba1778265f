"""`edgexray evaluate`: clinical metrics of one model on labelled films."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import model_or_shipped, user_errors
from .options import MODEL_HELP


@user_errors
def command(
    data: Annotated[
        Path,
        typer.Option(
            help="NORMAL/ PNEUMONIA/ folder, Kaggle root, or run directory (its manifest)."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(help=MODEL_HELP + " A run's .keras model is read too.", metavar="MODEL"),
    ] = None,
    old_model: Annotated[
        Path | None, typer.Argument(metavar="MODEL", help="Deprecated: use --model.")
    ] = None,
    split: Annotated[str, typer.Option(help="Split of a Kaggle root or run directory.")] = "test",
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Decision threshold; default: the sidecar's, or the run's val-chosen one."
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout (logs stay on stderr).")
    ] = False,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Write per-image predictions (path,label,probability,predicted) to this CSV."
        ),
    ] = None,
):
    """Clinical metrics of a model: recall and specificity with 95% CIs, AUC, calibration."""
    import json

    from edgexray.formatting import json_safe
    from edgexray.pipeline.evaluate import evaluate, report_lines

    how = "edgexray evaluate --model MODEL --data DIR"
    model = model_or_shipped(model, old_model, how, suffixes=(".tflite", ".keras"))
    report = evaluate(model, data, split, threshold, predictions)
    if json_output:
        typer.echo(json.dumps(json_safe(report), indent=2, allow_nan=False))
        return
    for line in report_lines(report):
        typer.echo(line)
