"""`edgexray quantize`: the TFLite variants, each with its sidecar and threshold."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgexray.export.quantize import METHODS, QuantizeConfig

from .common import Verbose, long_work, user_errors, writes_artifacts
from .options import RunDir, from_settings


@user_errors
@from_settings(
    QuantizeConfig,
    "representative_size",
    "qat_epochs",
    "qat_learning_rate",
    "recall_margin_films",
    "distribute",
)
def command(
    run_dir: RunDir,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            help=f"all, {', '.join(METHODS)}; repeat or comma-separate [all]. pqat and "
            "pruned-int8 (so also all) need `edgexray prune` first.",
        ),
    ] = None,
    verbose: Verbose = False,
    **settings,
):
    """Export TFLite variants, each with a sidecar and its own val-chosen threshold."""
    from edgexray import artifacts
    from edgexray.export.quantize import parse_methods, quantize, table_lines

    methods = parse_methods(method or ["all"])
    config = QuantizeConfig(**settings)
    with long_work(verbose):
        results = quantize(run_dir, methods, config, verbose=0)
    if not writes_artifacts(config.distribute):
        return
    for line in table_lines(results):
        typer.echo(line)
    typer.echo(f"models and sidecars: {Path(run_dir) / artifacts.TFLITE_DIR}")
