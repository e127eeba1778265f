"""`edgexray predict`: one record per film, through the device's own runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from .common import model_or_shipped, run_edge, user_errors
from .options import Deidentify, Model, Report, Threads


@user_errors
def command(
    images: Annotated[
        list[Path],
        typer.Argument(help="Image files, or folders walked for JPEG, PNG and DICOM films."),
    ],
    model: Model = None,
    record_format: Annotated[
        Literal["jsonl", "csv"], typer.Option("--format", help="Records as jsonl or csv.")
    ] = "jsonl",
    threads: Threads = None,
    report: Report = None,
    deidentify: Deidentify = None,
    no_scope_check: Annotated[
        bool,
        typer.Option(
            "--no-scope-check",
            help="Label every film, even one the out-of-scope guard would refuse "
            "(records then say in_scope null, scope_reason 'not checked').",
        ),
    ] = False,
):
    """Classify images with the standalone edge runtime: one record per image on stdout.

    Exit code 0 when every image was read and in scope, 3 when some could not be read
    (their records say why), else 4 when some were out of scope (label OUT_OF_SCOPE).
    """
    code = run_edge(
        model_or_shipped(model),
        images,
        record_format,
        threads,
        report_path=report,
        check_scope=not no_scope_check,
        deidentify_key=deidentify,
    )
    raise typer.Exit(code)
