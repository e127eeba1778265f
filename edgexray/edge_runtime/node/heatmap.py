"""Where the model looked, as a DICOM object the PACS shows beside the film: a Secondary
Capture of the heatmap overlay.

Why a Secondary Capture (and not a GSPS or a parametric map): every PACS stores it and
every viewer, down to the one built into the PACS, shows it as a picture, with the
colours and the legend the report shows (BurnedInAnnotation YES: the legend is text in
the pixels). A grayscale presentation state cannot carry a colour map, a blending one is
shown by few viewers, and a parametric map or segmentation needs a viewer that
overlays it, which the clinics this is for do not have.

The object is RGB, uncompressed, in the film's study and under its patient (the same
header as the report, evidence.evidence_header), in a series of its own ("edgexray
heatmap", number 991), and references the film in its Source Image Sequence. Its UIDs come
from the film's SOP Instance UID and the model's sha256, like the report's.
"""

from __future__ import annotations

import numpy as np

from ..explain import Explanation, overlay
from .evidence import EXPLICIT_LITTLE, PRODUCT, model_sha256, result_uid

SERIES_NUMBER = 991
SERIES_DESCRIPTION = "edgexray heatmap (where the model looked)"
# PS3.16 CID 7202: why the film is referenced.
SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")


def heatmap_capture(header, film: np.ndarray, explanation: Explanation, sidecar: dict):
    """The Secondary Capture of one film's overlay; header is the film's
    (evidence.read_header), film its 8-bit pixels as classified."""
    import highdicom as hd
    from pydicom import Dataset

    film_uid, model = str(header.SOPInstanceUID), model_sha256(sidecar)
    picture = np.asarray(overlay(film, explanation, float(sidecar["threshold"])).convert("RGB"))
    capture = hd.sc.SCImage(
        pixel_array=np.ascontiguousarray(picture),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        # Replaced below by the film's own orientation, or none: highdicom asks for one.
        patient_orientation=("L", "F"),
        study_instance_uid=str(header.StudyInstanceUID),
        series_instance_uid=result_uid(film_uid, model, "heatmap series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=result_uid(film_uid, model, "heatmap"),
        instance_number=1,
        manufacturer=PRODUCT,
        patient_id=header.PatientID,
        patient_name=header.PatientName,
        patient_birth_date=header.PatientBirthDate,
        patient_sex=header.PatientSex,
        accession_number=header.AccessionNumber,
        study_id=header.StudyID,
        study_date=header.StudyDate,
        study_time=header.StudyTime,
        referring_physician_name=header.ReferringPhysicianName,
        transfer_syntax_uid=EXPLICIT_LITTLE,
        series_description=SERIES_DESCRIPTION,
    )
    capture.PatientOrientation = header.get("PatientOrientation")
    if "SpecificCharacterSet" in header:
        capture.SpecificCharacterSet = header.SpecificCharacterSet
    if "BodyPartExamined" in header:  # CHEST: not a paired part, no laterality to state
        capture.BodyPartExamined = header.BodyPartExamined
    else:
        capture.Laterality = None  # type 2C, unknown
    capture.ConversionType = "WSD"  # made by a workstation (this node), not a digital interface
    capture.BurnedInAnnotation = "YES"
    capture.ImageType = ["DERIVED", "SECONDARY"]
    capture.DerivationDescription = (
        f"occlusion sensitivity of the pneumonia logit, model sha256 {model}: the colour "
        "shows where greying the film lowered the model's pneumonia evidence"
    )[:1024]
    source = Dataset()
    source.ReferencedSOPClassUID = header.SOPClassUID
    source.ReferencedSOPInstanceUID = film_uid
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = SOURCE_PURPOSE
    source.PurposeOfReferenceCodeSequence = [purpose]
    capture.SourceImageSequence = [source]
    return capture
