"""`edgexray prune`: the trained model pruned and fine-tuned (pruned.keras)."""

from __future__ import annotations

from pathlib import Path

import typer

from edgexray.pipeline.prune import PruneConfig

from .common import Verbose, given, long_work, user_errors, writes_artifacts
from .options import RunDir, from_settings


@user_errors
@from_settings(PruneConfig, "sparsity", "epochs", "learning_rate", "distribute")
def command(ctx: typer.Context, run_dir: RunDir, verbose: Verbose = False, **settings):
    """Prune the trained model, fine-tune it and save pruned.keras (model.keras is untouched)."""
    from edgexray import artifacts
    from edgexray.pipeline.prune import prune, prune_config, summary_lines
    from edgexray.pipeline.train import load_config

    # The options not given take the run's backbone's settings, as `edgexray run` does.
    train_config = load_config(artifacts.require_run(run_dir))
    config = prune_config(train_config, **given(ctx, **settings))
    with long_work(verbose):
        report = prune(run_dir, config, verbose=0)
    if not writes_artifacts(config.distribute):
        return
    for line in summary_lines(report):
        typer.echo(line)
    typer.echo(f"pruned model: {Path(run_dir) / artifacts.PRUNED}")
