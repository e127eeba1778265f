"""`edgexray verify`: the gate. Compressed models must keep the float model's recall."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgexray.pipeline.verify import GateLimits

from .common import fail, user_errors
from .options import from_settings

GATE = ("max_recall_drop", "max_specificity_drop", "max_auc_drop", "max_out_of_scope")


@user_errors
@from_settings(GateLimits, *GATE)
def command(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            help="Run directory: model.keras vs every tflite/*.tflite on its test split."
        ),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="Float model (.keras in its run directory, or .tflite).")
    ] = None,
    candidate: Annotated[
        list[Path] | None, typer.Option(help="Compressed model to check (repeat for several).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Images for --baseline/--candidate: NORMAL/ PNEUMONIA/ folder, Kaggle root "
            "or run directory."
        ),
    ] = None,
    split: Annotated[
        str, typer.Option(help="Split of a Kaggle root or run directory given as --data.")
    ] = "test",
    **limits,
):
    """Fail (exit 1) when a candidate misses more pneumonia than the float baseline, or
    loses too much specificity or AUC (a model calling every film pneumonia must not pass)."""
    from edgexray.pipeline.verify import RecallRegressionError, verify, verify_run

    if run_dir is not None and (baseline or candidate or data):
        raise fail("give either RUN_DIR or --baseline/--candidate/--data, not both")
    if run_dir is None and not (baseline and candidate and data):
        raise fail("give RUN_DIR, or --baseline M --candidate M [--candidate M ...] --data DIR")
    gate = GateLimits(**limits)
    try:
        if run_dir is not None:
            report = verify_run(run_dir, gate)
        else:
            report = verify(baseline, candidate, data, split, gate)
    except RecallRegressionError as err:
        _print_table(err.report, run_dir)
        raise
    _print_table(report, run_dir)
    typer.echo(
        "passed: no candidate lost pneumonia recall, specificity or AUC beyond the allowed drop"
    )


def _print_table(report, run_dir: Path | None) -> None:
    from edgexray.pipeline.verify import REPORT, table_lines

    for line in table_lines(report):
        typer.echo(line)
    if run_dir is not None:
        typer.echo(f"report: {run_dir / REPORT}")
