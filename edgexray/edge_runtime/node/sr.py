"""Results back to the reader: the DICOM Structured Report of one film (outbox.py sends it).

The node queues each classified film's record in its outbox (outbox.py), whose sender thread
builds each report with highdicom (a Comprehensive SR that references the film's SOP
instance and holds the label, probability, threshold, the scope flag when the record has
one, the model's sha256, and an error or quality warning when there is one), writes it to
outbox/ (NAME.sr.dcm), delivers it by C-STORE and deletes it once the PACS answered
success; it backs off (doubling, up to retry_max) while the PACS is down. outbox/ survives
restarts, so nothing is lost while the PACS or the node is away. A report is built from
what the film's header has (`evidence_header`); a record no report could be built for
waits in outbox/failed/ with the reason, logged, and is tried again every FAILED_RETRY
seconds and at each start: never dropped.

The report's UIDs are derived from the film's SOP Instance UID and the model's sha256: a
report built or queued twice (a crash between the queue and the record) is the same
instance, which a PACS stores once.

highdicom is imported lazily (`pip install "edgexray[node]"`); without it the node runs,
but refuses --pacs with a one-line error.
"""

from __future__ import annotations

import logging
import warnings

from ..errors import InferenceError

log = logging.getLogger("edgexray.node")

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
SCHEME = "99EDGEXRAY"  # a private coding scheme (PS3.16 8.2: 99 prefix, local codes)
# The record's numbers a report carries: (code, meaning, record field).
NUMBERS = (
    ("PROBABILITY", "Pneumonia probability", "probability"),
    ("THRESHOLD", "Decision threshold", "threshold"),
)
# The record's in_scope (scope.py): True, False, or None when the check was not made.
SCOPE_WORDS = {True: "yes", False: "no", None: "not checked"}
NOTICE = "Screening aid from an automated classifier: a person reads every film."


def require_highdicom() -> None:
    try:
        import highdicom.sr  # noqa: F401  (now, not while the first film waits)
    except ImportError:
        raise InferenceError(
            'sending Structured Reports (--pacs) needs highdicom: pip install "edgexray[node]"'
        ) from None


def _code(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=SCHEME, meaning=meaning)


# What a report copies from its film (the patient and general study modules, and the UIDs
# that reference the film): keyword and VR.
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
)
PATIENT_SEXES = ("M", "F", "O")  # PS3.3 C.7.1.1: the only values of Patient's Sex


def evidence_header(source):
    """The film's header as its report may copy it: EVIDENCE, each value kept when it is
    valid for its VR, else left empty (DICOM's type 2); a missing SOP class or instance
    UID is taken from the file meta, a missing study or series UID derived from the
    film's own UID (the same every time).

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
        elif keyword != "SpecificCharacterSet":
            setattr(header, keyword, None)  # present and empty: type 2
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


def structured_report(film, record: dict, model_sha256: str):
    """A Comprehensive SR dataset with the record of one film (a path or an open binary
    file), referencing the film."""
    import highdicom as hd
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    with warnings.catch_warnings():  # a damaged file fails below, with its one log line
        warnings.simplefilter("ignore")
        source = evidence_header(dcmread(film, stop_before_pixels=True))
    uid = str(source.SOPInstanceUID)
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    unitless = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning="no units")
    items = [
        hd.sr.TextContentItem(_code("NOTICE", "Notice"), NOTICE, contains),
        hd.sr.ImageContentItem(
            _code("SOURCE", "Source image"), source.SOPClassUID, uid, relationship_type=contains
        ),
    ]
    if "error" in record:
        items.append(
            hd.sr.TextContentItem(
                _code("ERROR", "Not classified"), str(record["error"])[:1000], contains
            )
        )
    else:
        items.append(hd.sr.TextContentItem(_code("LABEL", "Label"), str(record["label"]), contains))
        items += [
            hd.sr.NumContentItem(
                _code(code, meaning), float(record[key]), unitless, relationship_type=contains
            )
            for code, meaning, key in NUMBERS
            if isinstance(record.get(key), (int, float))
        ]
    if "in_scope" in record:
        scope = f"{SCOPE_WORDS[record['in_scope']]}: {record.get('scope_reason') or ''}"
        items.append(
            hd.sr.TextContentItem(_code("IN_SCOPE", "In scope"), scope.strip(": ")[:1000], contains)
        )
    if record.get("quality_warning"):
        items.append(
            hd.sr.TextContentItem(
                _code("QUALITY", "Quality warning"), str(record["quality_warning"])[:1000], contains
            )
        )
    items.append(hd.sr.TextContentItem(_code("MODEL", "Model sha256"), model_sha256, contains))
    root = hd.sr.ContainerContentItem(_code("RESULT", "edgexray chest film screening"))
    root.ContentSequence = items
    return hd.sr.ComprehensiveSR(
        evidence=[source],
        content=root,
        series_instance_uid=generate_uid(entropy_srcs=[uid, model_sha256, "series"]),
        series_number=990,
        sop_instance_uid=generate_uid(entropy_srcs=[uid, model_sha256, "report"]),
        instance_number=1,
        manufacturer="edgexray",
        series_description="edgexray screening result",
    )
