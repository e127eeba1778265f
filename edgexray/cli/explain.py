"""`edgexray explain`: where the deployed model looked, film by film."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import fail, model_or_shipped, run_edge, user_errors
from .options import Deidentify, Grid, Model, Report, Threads


@user_errors
def command(
    films: Annotated[
        list[Path],
        typer.Argument(metavar="FILM...", help="Image files, or folders walked for films."),
    ],
    out: Annotated[Path, typer.Option(help="Folder for FILM.heatmap.png and FILM.heatmap.npy.")],
    model: Model = None,
    threads: Threads = None,
    report: Report = None,
    deidentify: Deidentify = None,
    grid: Grid = None,
):
    """Where the deployed model looked: an occlusion heatmap per film, from the .tflite itself.

    Prints each film's record (as `predict`) with the paths of its overlay and map.
    """
    old_model = films[0] if films[0].suffix.lower() == ".tflite" else None
    films = films[1:] if old_model is not None else films
    how = "edgexray explain --model MODEL FILM... --out DIR"
    model = model_or_shipped(model, old_model, how)
    if not films:
        raise fail("give image files or folders")
    raise typer.Exit(
        run_edge(
            model,
            films,
            "jsonl",
            threads,
            explain_dir=out,
            report_path=report,
            grid=grid,
            deidentify_key=deidentify,
        )
    )
