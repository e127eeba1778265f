"""`edgexray data ...`: getting the public chest X-ray data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from edgexray.pipeline.download import SOURCES, FetchLimits

from .common import user_errors
from .options import from_settings

app = typer.Typer(
    help="Get the public chest X-ray data set.", no_args_is_help=True, add_completion=False
)


@app.command("download")
@user_errors
@from_settings(FetchLimits, "deadline", "min_rate")
def download_command(
    out: Annotated[
        Path, typer.Option(help="Folder to put chest_xray/ in (./data is where run looks).")
    ] = Path("data"),
    source: Annotated[
        Literal[tuple(SOURCES)],
        typer.Option(help="mendeley (no account) or kaggle (kagglehub, a Kaggle token)."),
    ] = "mendeley",
    url: Annotated[
        str | None, typer.Option(help="An http(s) mirror of the source's archive.")
    ] = None,
    sha256: Annotated[
        str | None, typer.Option(help="The archive's expected sha256 (64 hex digits).")
    ] = None,
    archive: Annotated[
        Path | None,
        typer.Option(help="Extract this archive, already downloaded by hand; no network."),
    ] = None,
    keep_archive: Annotated[
        bool, typer.Option(help="Keep the downloaded archive in OUT/.download.")
    ] = False,
    **limits,
):
    """Download, verify and extract the data into OUT/chest_xray/{train,test}/{NORMAL,PNEUMONIA}.

    A cut download, or one stopped by --deadline or --min-rate, resumes when the same
    command runs again.
    """
    from edgexray.pipeline import download

    label = Path(SOURCES[source].filename).name
    result = download.download(
        out,
        source,
        url=url,
        sha256=sha256,
        archive=archive,
        keep_archive=keep_archive,
        limits=FetchLimits(**limits),
        on_progress=download.progress_printer(f"downloading {label or source}"),
    )
    if not result.downloaded:
        typer.echo(f"already there: {result.folder} (remove it to download again)")
        return
    for split, labels in result.counts.items():
        typer.echo(f"{split}: " + ", ".join(f"{n} {label}" for label, n in labels.items()))
    if result.sha256:
        typer.echo(f"archive sha256: {result.sha256}")
    typer.echo(f"data: {result.folder}")
