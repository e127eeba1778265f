"""`edgexray bundle`: a folder (and zip) for a Raspberry Pi or an Android app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgexray.export.bundle import BundleConfig

from .common import model_or_shipped, user_errors
from .options import Model, from_settings


@user_errors
@from_settings(BundleConfig, "target", "out", "zip")
def command(
    model: Model = None,
    old_model: Annotated[
        Path | None, typer.Argument(metavar="MODEL", help="Deprecated: use --model.")
    ] = None,
    **settings,
):
    """Write a folder (and zip) to copy to a Raspberry Pi or into an Android app
    (android: a full-int8 model)."""
    from edgexray.export.bundle import make_bundle

    how = "edgexray bundle --model MODEL --target T --out DIR"
    model = model_or_shipped(model, old_model, how)
    result = make_bundle(BundleConfig(model=str(model), **settings))
    typer.echo(f"{result['target']} bundle: {result['path']}")
    for name in result["files"]:
        typer.echo(f"  {name}")
    if result["kept"]:
        typer.echo(f"kept your files: {', '.join(result['kept'])}")
    if result["zip"]:
        typer.echo(f"zip: {result['zip']}")
    typer.echo(f"next: follow {Path(result['path']) / 'README.md'}")
