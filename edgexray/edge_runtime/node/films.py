"""A first film for the node: a DICOM file made from a JPEG or PNG, for a plain `storescu`.

`write_test_film` reads the picture as every edgexray reader does (8-bit grey, upright as
its EXIF tag says) and writes it as a Secondary Capture image: MONOCHROME2, 8 bits,
uncompressed (Explicit VR Little Endian), so every storescu sends it as it is, with a
synthetic patient and a new study, series and instance UID. It is a film to try the
node and the PACS with, not a clinical conversion: the patient is made up and says so.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from ..errors import ImageError, InferenceError
from ..options import option
from ..outputs.files import PRIVATE, write_atomic
from ..readers import dicom, read

VIEWS = ("PA", "AP", "LL", "RL")


@dataclass(frozen=True)
class SyntheticFilm:
    """The synthetic patient and study of a test film."""

    patient_name: str = option("TEST^FILM", "the synthetic patient's name (Family^Given)")
    patient_id: str = option(
        "", "the synthetic patient's ID (default: TEST- and the start of the picture's sha256)"
    )
    view: str | None = option(None, "the view position written in the film", choices=VIEWS)
    body_part: str = option("CHEST", "the body part written in the film")

    def __post_init__(self):
        if self.view and self.view not in VIEWS:
            raise InferenceError(f"view {self.view!r}: choose one of {', '.join(VIEWS)}")
        for what, text in (("patient name", self.patient_name), ("patient ID", self.patient_id)):
            if len(text) > 64 or "\\" in text or any(ord(c) < 32 for c in text):
                raise InferenceError(f"{what} {text!r}: at most 64 characters, no backslash")


def write_test_film(
    picture: str | Path, out: str | Path, film: SyntheticFilm = SyntheticFilm()
) -> dict:
    """Write picture (a JPEG or PNG) as a DICOM film at out (a new file).

    Returns:
        what was written: path, sop_instance_uid, study_instance_uid, patient_id, rows,
        columns.

    Raises:
        InferenceError: out exists, or picture is not a JPEG or PNG film (a DICOM file
            needs no conversion).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        ExplicitVRLittleEndian,
        SecondaryCaptureImageStorage,
        generate_uid,
    )

    picture, out = Path(picture), Path(out)
    if out.exists():
        raise InferenceError(f"{out} exists: give a new file name for the film")
    if dicom.has_preamble(picture):
        raise InferenceError(f"{picture} is DICOM already: send it as it is")
    try:
        pixels, _ = read(picture)
    except ImageError as err:
        raise InferenceError(str(err)) from None
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()
    now = datetime.datetime.now()
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: a name may hold any letter
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName = film.patient_name
    ds.PatientID = film.patient_id or f"TEST-{digest[:12]}"
    ds.PatientBirthDate, ds.PatientSex = "", ""
    ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ContentDate, ds.ContentTime = ds.StudyDate, ds.StudyTime
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.StudyDescription = f"edgexray test film from {picture.name}"[:64]
    ds.SeriesDescription = "test film (synthetic patient)"
    ds.Modality = "OT"  # a secondary capture: what the picture was taken with is unknown
    ds.ConversionType = "WSD"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.BodyPartExamined = film.body_part
    if film.view:
        ds.ViewPosition = film.view
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "NO"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    write_atomic(out, buffer.getvalue(), PRIVATE)
    return {
        "path": str(out),
        "sop_instance_uid": uid,
        "study_instance_uid": str(ds.StudyInstanceUID),
        "patient_id": str(ds.PatientID),
        "rows": int(ds.Rows),
        "columns": int(ds.Columns),
    }
