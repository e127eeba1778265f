"""`edgexray benchmark`: every variant side by side: size, latency, memory, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgexray.benchmarks.harness import BenchmarkConfig

from .common import user_errors
from .options import from_settings


@user_errors
@from_settings(BenchmarkConfig, "threads", "warmup", "runs")
def command(
    models: Annotated[
        list[Path], typer.Argument(help="A run directory, or .keras/.tflite models.")
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Test images (test/ or NORMAL/ PNEUMONIA/); default the run's test split."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder [RUN_DIR/benchmark].")] = None,
    **settings,
):
    """Size, latency, memory and clinical metrics of every variant, side by side, with plots."""
    from edgexray.benchmarks.harness import benchmark
    from edgexray.benchmarks.tables import table
    from edgexray.formatting import format_table, target_state

    config = BenchmarkConfig(
        **settings, out=str(out) if out else None, data=str(data) if data else None
    )
    result = benchmark(models, config)
    typer.echo(format_table(*table(result)))
    for target in result["targets"]:
        typer.echo(f"target {target_state(target['met'])}: {target['target']}")
    typer.echo(f"benchmark.json, benchmark.md and {len(result['plots'])} plot(s): {result['out']}")
