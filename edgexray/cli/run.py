"""`edgexray run`: the whole job, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgexray.pipeline.prune import PruneConfig
from edgexray.pipeline.train import TrainConfig
from edgexray.pipeline.verify import GateLimits
from edgexray.run import RunConfig

from .common import Verbose, fail, long_work, user_errors, writes_artifacts
from .options import from_settings
from .verify import GATE

TRAIN = ("backbone", "epochs", "target_recall", "seed", "distribute")


@user_errors
@from_settings(TrainConfig, *TRAIN)
@from_settings(PruneConfig, "sparsity")
@from_settings(GateLimits, *GATE)
@from_settings(RunConfig, "strict")
def command(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Data folder; default $EDGEXRAY_DATA, ./data/chest_xray, "
            "../shared/data/chest_xray."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory (resumable).")] = Path("runs/default"),
    force: Annotated[
        list[str] | None, typer.Option(help="Redo this stage (and the ones after it); repeatable.")
    ] = None,
    calibrate_on: Annotated[
        Path | None,
        typer.Option(
            help="A site's labelled NORMAL/ PNEUMONIA/ sample: calibrate the device model on it "
            "(recall >= the target at 95% confidence) and bundle the calibrated copy."
        ),
    ] = None,
    download: Annotated[
        bool, typer.Option(help="No data found: download the public set first (data download).")
    ] = False,
    verbose: Verbose = False,
    **settings,
):
    """The whole job: train, prune, quantize, verify, benchmark and bundle; resumable."""
    import time

    from edgexray import artifacts
    from edgexray.export.quantize import QuantizeConfig
    from edgexray.pipeline import train
    from edgexray.pipeline.prune import prune_config
    from edgexray.pipeline.verify import RecallRegressionError
    from edgexray.run import STAGES, find_data, run, summary_lines

    distribute = settings["distribute"]
    train_config = TrainConfig(
        data=str(find_data(data, download).resolve()), **{k: settings[k] for k in TRAIN}
    )
    config = RunConfig(
        train=train_config,
        prune=prune_config(train_config, sparsity=settings["sparsity"], distribute=distribute),
        quantize=QuantizeConfig(distribute=distribute),
        gate=GateLimits(**{k: settings[k] for k in GATE}),
        calibrate_on=str(calibrate_on.resolve()) if calibrate_on else None,
        strict=settings["strict"],
    )
    started = time.monotonic()

    def on_stage(index, stage, event):
        elapsed = f"{time.monotonic() - started:6.0f} s"
        words = {"start": "running", "skip": "unchanged, skipped", "done": "done"}[event]
        typer.echo(f"[{index}/{len(STAGES)} {elapsed}] {stage}: {words}", err=True)

    try:
        with long_work(verbose):
            summary = run(config, out, tuple(force or ()), 0, on_stage)
    except RecallRegressionError as err:
        typer.echo(f"report: {out / artifacts.RUN_REPORT}")
        raise fail(str(err), err.exit_code) from None
    if not writes_artifacts(distribute):
        return
    for line in train.summary_lines(train.read_metrics(out)):
        typer.echo(line)
    for line in summary_lines(summary):
        typer.echo(line)
    typer.echo(f"report: {out / artifacts.RUN_REPORT}")
    typer.echo(f"total: {time.monotonic() - started:.0f} s")
