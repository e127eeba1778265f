"""What a result sent to the PACS takes from its film and from the model: the film's
patient and study attributes (so the result files under the film's own study), the UIDs
that make a result the same instance however often it is built, and the model's identity.

The Structured Report (sr.py) and the heatmap (heatmap.py) are built from the same header
(`evidence_header`), so they never disagree with each other or with the film.
"""

from __future__ import annotations

import warnings

from ..errors import InferenceError

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
PRODUCT = "edgexray"

# What a result copies from its film (the patient and general study modules, the UIDs that
# reference the film, and what a heatmap needs to be shown the film's way up): keyword and VR.
EVIDENCE = (
    ("SOPClassUID", "UI"),
    ("SOPInstanceUID", "UI"),
    ("StudyInstanceUID", "UI"),
    ("SeriesInstanceUID", "UI"),
    ("PatientName", "PN"),
    ("PatientID", "LO"),
    ("PatientBirthDate", "DA"),
    ("PatientSex", "CS"),
    ("AccessionNumber", "SH"),
    ("StudyID", "SH"),
    ("StudyDate", "DA"),
    ("StudyTime", "TM"),
    ("ReferringPhysicianName", "PN"),
    ("SpecificCharacterSet", "CS"),
    ("BodyPartExamined", "CS"),
)
# Kept only when the film has them (not type 2 in a result's modules).
OPTIONAL = ("SpecificCharacterSet", "BodyPartExamined")
PATIENT_SEXES = ("M", "F", "O")  # PS3.3 C.7.1.1: the only values of Patient's Sex


def require_highdicom() -> None:
    try:
        import highdicom.sr  # noqa: F401  (now, not while the first film waits)
    except ImportError:
        raise InferenceError(
            'sending results to a PACS (--pacs) needs highdicom: pip install "edgexray[node]"'
        ) from None


def model_sha256(sidecar: dict) -> str:
    """The sha256 that identifies the model in every result (the one place it is read)."""
    return str(sidecar["sha256"])


def result_uid(film_uid: str, model: str, what: str) -> str:
    """A UID for one result of one film by one model ("report", "heatmap series"...): the
    same every time, so a result built or sent twice is one instance to the PACS."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[film_uid, model, what])


def read_header(film):
    """The film's header (a path or an open binary file) without its pixels, as
    `evidence_header` makes it: what its results may copy."""
    from pydicom import dcmread

    with warnings.catch_warnings():  # a damaged file fails here, with its one log line
        warnings.simplefilter("ignore")
        return evidence_header(dcmread(film, stop_before_pixels=True))


def evidence_header(source):
    """The film's header as its results may copy it: EVIDENCE, each value kept when it is
    valid for its VR, else left empty (DICOM's type 2); a missing SOP class or instance
    UID is taken from the file meta, a missing study or series UID derived from the
    film's own UID (the same every time). PatientOrientation is kept when valid.

    Raises:
        ValueError: the header names neither a patient nor a study (an unreadable file).

    Real exports carry PatientSex U, partial birth dates, hours past 24 or no study date:
    highdicom rightly refuses such values, and a film's header quirk must never keep its
    result from the PACS.
    """
    from pydicom import Dataset
    from pydicom.uid import generate_uid

    if not any(source.get(keyword) for keyword in ("StudyInstanceUID", "PatientID")):
        raise ValueError(
            "the film's header names neither a patient nor a study: a report would be "
            "filed under nobody"
        )
    meta = getattr(source, "file_meta", None) or Dataset()
    fallback = {
        "SOPClassUID": meta.get("MediaStorageSOPClassUID") or SECONDARY_CAPTURE,
        "SOPInstanceUID": meta.get("MediaStorageSOPInstanceUID"),
    }
    header = Dataset()
    for keyword, vr in EVIDENCE:
        value = source.get(keyword)
        if _valid(keyword, vr, value):
            setattr(header, keyword, value)
        elif vr == "UI":
            film = str(header.get("SOPInstanceUID", ""))
            derived = generate_uid(entropy_srcs=[film, keyword])
            setattr(header, keyword, fallback.get(keyword) or derived)
        elif keyword not in OPTIONAL:
            setattr(header, keyword, None)  # present and empty: type 2
    orientation = [str(v).strip().upper() for v in (source.get("PatientOrientation") or [])]
    if len(orientation) == 2 and all(v and set(v) <= set("LRAPHF") for v in orientation):
        header.PatientOrientation = orientation
    return header


def _valid(keyword: str, vr: str, value) -> bool:
    """True when value is present and valid for its VR (a date or time also as a date or
    time: 20231345 has the right digits, but no month 13)."""
    from pydicom.config import RAISE
    from pydicom.valuerep import DA, TM, validate_value

    if value in (None, ""):
        return False
    try:
        validate_value(vr, value, RAISE)
        if vr in ("DA", "TM"):
            (DA if vr == "DA" else TM)(value)
    except Exception:  # pydicom raises ValueError, TypeError... for malformed values
        return False
    return keyword != "PatientSex" or str(value).strip().upper() in PATIENT_SEXES
