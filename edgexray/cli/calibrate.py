"""`edgexray calibrate`: the threshold re-chosen on a new site's films."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgexray.pipeline.calibrate import CalibrateConfig

from .common import model_or_shipped, user_errors
from .options import Model, from_settings

OPTIONS = ("target_recall", "confidence", "prevalence", "folds", "allow_point_estimate")


@user_errors
@from_settings(CalibrateConfig, *OPTIONS)
def command(
    data: Annotated[
        Path, typer.Option(help="The site's labelled sample: a folder with NORMAL/ and PNEUMONIA/.")
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for the model copy and its calibrated sidecar.")
    ],
    model: Model = None,
    old_model: Annotated[
        Path | None, typer.Argument(metavar="MODEL", help="Deprecated: use --model.")
    ] = None,
    patients: Annotated[
        Path | None,
        typer.Option(
            help="CSV file,patient naming each film's patient, for the patient-grouped "
            "cross-validation; default: DICOM PatientID, else Kaggle-style file names."
        ),
    ] = None,
    **settings,
):
    """Re-choose the threshold on a new site's films so recall holds with stated confidence."""
    from edgexray.pipeline.calibrate import calibrate, summary_lines

    how = "edgexray calibrate --model MODEL --data DIR --out DIR"
    model = model_or_shipped(model, old_model, how)
    for line in summary_lines(calibrate(model, data, out, CalibrateConfig(**settings), patients)):
        typer.echo(line)
