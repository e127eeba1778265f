"""`edgexray train`: the float model from a folder of films."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgexray.pipeline.train import TrainConfig

from .common import Verbose, fail, given, long_work, user_errors, writes_artifacts
from .options import from_settings

OPTIONS = (
    "backbone",
    "image_size",
    "width",
    "epochs",
    "target_recall",
    "seed",
    "max_train_images",
    "distribute",
)


@user_errors
@from_settings(TrainConfig, *OPTIONS)
def command(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option(help="Data folder (NORMAL/ PNEUMONIA/ or Kaggle root).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/default"),
    config: Annotated[
        Path | None,
        typer.Option(help="JSON file with TrainConfig fields; the options given here win."),
    ] = None,
    verbose: Verbose = False,
    **settings,
):
    """Train the float model: patient-grouped split, early stopping, val-chosen threshold."""
    from edgexray.pipeline.train import summary_lines, train

    values = given(ctx, **settings)
    if data is not None:
        values["data"] = str(data.resolve())
    if config:
        train_config = TrainConfig.from_json(config, **values)
    elif data is None:
        raise fail("give --data DIR (a folder with NORMAL/ and PNEUMONIA/) or --config FILE")
    else:
        train_config = TrainConfig(**values)
    with long_work(verbose):
        summary = train(train_config, out, verbose=0)
    if not writes_artifacts(train_config.distribute):
        return
    for line in summary_lines(summary):
        typer.echo(line)
    typer.echo(f"run directory: {out}")
    if summary["interrupted"]:
        raise typer.Exit(130)
