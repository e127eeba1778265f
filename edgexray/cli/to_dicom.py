"""`edgexray to-dicom`: a DICOM test film from a JPEG or PNG, to push to the node."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgexray.edge_runtime.node.films import SyntheticFilm

from .common import user_errors
from .options import from_settings


@user_errors
@from_settings(SyntheticFilm, "patient_name", "patient_id", "view", "body_part")
def command(
    picture: Annotated[Path, typer.Argument(help="A JPEG or PNG film.")],
    out: Annotated[Path, typer.Argument(help="The DICOM file to write (a new file).")],
    **settings,
):
    """Write a DICOM film (Secondary Capture, MONOCHROME2, uncompressed, a synthetic
    patient) from a JPEG or PNG, for a first push to the node with plain storescu."""
    from edgexray.edge_runtime.node.films import write_test_film

    written = write_test_film(picture, out, SyntheticFilm(**settings))
    typer.echo(
        f"{written['path']}: {written['columns']}x{written['rows']} MONOCHROME2 film, "
        f"patient {written['patient_id']}, SOP instance {written['sop_instance_uid']}"
    )
