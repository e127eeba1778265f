"""Whose film it is: the identity a DICOM film carries, as record fields, and what a
de-identified output keeps of each.

`IDENTITY` is the table: a record field, the DICOM attribute it comes from, and what
sharing does to it (`outputs/deidentify.py`): kept, replaced by a keyed hash (so the
holder of the key can still link a result to its patient and study), or dropped. The
DICOM reader reads these attributes (dicom.TAGS), the classifier puts the ones a film has
into its record, the CSV has a column for each, the HTML report titles films by them and
a de-identified output follows the last column. A JPEG or PNG film has none: its file
name is its identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..scope import patient_age_years

KEEP, HASH, DROP = "keep", "keyed hash", "drop"
YEARS = "age in whole years"  # from PatientAge, or the birth and study dates
# Ages above this are shared as this "or more" (HIPAA Safe Harbor: an age over 89 is
# identifying in a small population).
OLDEST_SHARED_AGE = 90


@dataclass(frozen=True)
class Attribute:
    """One identifying attribute of a film."""

    field: str  # the record's name for it
    keyword: str  # the DICOM attribute
    shared: str  # KEEP, HASH or DROP in a de-identified output


IDENTITY = (
    Attribute("patient_name", "PatientName", DROP),
    Attribute("patient_id", "PatientID", HASH),
    Attribute("patient_birth_date", "PatientBirthDate", DROP),
    Attribute("patient_age", "PatientAge", YEARS),
    Attribute("patient_sex", "PatientSex", KEEP),
    Attribute("accession_number", "AccessionNumber", HASH),
    Attribute("study_date", "StudyDate", DROP),
    Attribute("study_description", "StudyDescription", DROP),
    Attribute("body_part", "BodyPartExamined", KEEP),
    Attribute("view", "ViewPosition", KEEP),
    Attribute("study_instance_uid", "StudyInstanceUID", HASH),
    Attribute("series_instance_uid", "SeriesInstanceUID", HASH),
    Attribute("sop_instance_uid", "SOPInstanceUID", HASH),
)
FIELDS = tuple(attribute.field for attribute in IDENTITY)
KEYWORDS = tuple(attribute.keyword for attribute in IDENTITY)


def identity(tags: dict | None) -> dict:
    """The record fields of a film's identity, in IDENTITY's order: those its DICOM tags
    (keyword -> value, as the reader gives them) hold, as text; {} for a JPEG or PNG."""
    if not tags:
        return {}
    found = {}
    for attribute in IDENTITY:
        value = str(tags.get(attribute.keyword) or "").strip()
        if value:
            found[attribute.field] = value
    return found


def shared_age(record_or_tags: dict) -> str | None:
    """The age a de-identified output may show, in whole years ("37", "90 or more"), from
    PatientAge or from the birth and study dates (which it does not show); None when
    neither says."""
    tags = {
        "PatientAge": record_or_tags.get("patient_age"),
        "PatientBirthDate": record_or_tags.get("patient_birth_date"),
        "StudyDate": record_or_tags.get("study_date"),
    }
    years = patient_age_years(tags)
    if years is None:
        return None
    if years >= OLDEST_SHARED_AGE:
        return f"{OLDEST_SHARED_AGE} or more"
    return str(int(years))
