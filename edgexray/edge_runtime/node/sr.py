"""The result of one film as a standard DICOM Structured Report: TID 1500 Measurement Report.

Why TID 1500 and not the Chest CAD SR (TID 4100): TID 1500 is what the IHE AI Results
profile (AIR) asks of an AI result, what highdicom writes with its templates and what
current viewers (OHIF, 3D Slicer) read; the Chest CAD SR IOD is a 2001 design for nodule
marks whose viewers are few. The report holds one measurement group (TID 1501):

    finding               Pneumonia (SCT 233604007), finding site Lung (SCT 39607008)
    qualitative evaluation  Pneumonia: Present (SCT 52101004) or Absent (SCT 272519000)
                          at the decision threshold; Indeterminate (SCT 82334004) when the
                          film is out of the model's scope or could not be classified
    measurements (TID 300)  Probability (DCM 122157) and Threshold Value (DCM 122411), UCUM
                          "1" (no units): only when the answer counts (in scope)
    qualitative evaluation  Within the model's scope: Yes (SCT 373066001) / No (SCT 373067005),
                          a private code (99EDGEXRAY IN_SCOPE): no standard concept says
                          whether an input is one the algorithm was trained for
    qualitative evaluation  Image Quality (DCM 111101): Insufficient quality for
                          interpretation (DCM 110531) for a flat or blank image
    text (TID 1501 row 12)  Comment (DCM 121106): the screening notice, why the film is out
                          of scope, the quality warning or why it was not classified
    algorithm (TID 4019)  name, version, and as parameters the model's sha256, the decision
                          threshold with where it came from, and whether scope was checked
    source image          the film's SOP instance

The observer is the device (DCM 121007), the procedure a plain chest X-ray (SCT 399208008).
The report copies the film's patient and study attributes (evidence.evidence_header), so it
files under the film's study; its UIDs come from the film's SOP Instance UID and the
model's sha256, so a report built twice is one instance to the PACS.

highdicom is imported lazily (`pip install "edgexray[node]"`).
"""

from __future__ import annotations

from ..outputs.report import threshold_origin
from .evidence import PRODUCT, model_sha256, result_uid

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SERIES_NUMBER = 990
SERIES_DESCRIPTION = "edgexray pneumonia screening result"
ALGORITHM = "edgexray pneumonia classifier"
PRIVATE_SCHEME = "99EDGEXRAY"  # PS3.16 8.2: a 99 prefix marks a local coding scheme
NOTICE = "Screening aid from an automated classifier: a person reads every film."
# Text items are cut to this many characters (an error can quote a long decoder message).
TEXT_LIMIT = 1000

# Codes: (value, scheme, meaning). Standard ones first; the one private code last, with
# the reason it is private in the module docstring and README.
PNEUMONIA = ("233604007", "SCT", "Pneumonia")
LUNG = ("39607008", "SCT", "Lung")
PRESENT = ("52101004", "SCT", "Present")
ABSENT = ("272519000", "SCT", "Absent")
INDETERMINATE = ("82334004", "SCT", "Indeterminate")
YES, NO = ("373066001", "SCT", "Yes"), ("373067005", "SCT", "No")
PROBABILITY = ("122157", "DCM", "Probability")
THRESHOLD = ("122411", "DCM", "Threshold Value")
NO_UNITS = ("1", "UCUM", "no units")
IMAGE_QUALITY = ("111101", "DCM", "Image Quality")
INSUFFICIENT_QUALITY = ("110531", "DCM", "Insufficient quality for interpretation")
COMMENT = ("121106", "DCM", "Comment")
DEVICE = ("121007", "DCM", "Device")
CHEST_XRAY = ("399208008", "SCT", "Plain chest X-ray")
IN_SCOPE = ("IN_SCOPE", PRIVATE_SCHEME, "Within the model's scope")
PRIVATE_CODES = (IN_SCOPE,)


def _code(code: tuple[str, str, str]):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=code[0], scheme_designator=code[1], meaning=code[2])


def answer(record: dict) -> tuple[str, str, str]:
    """The finding's qualitative evaluation: Present, Absent or Indeterminate."""
    if "error" in record or record.get("in_scope") is False or "label" not in record:
        return INDETERMINATE
    return PRESENT if float(record["probability"]) >= float(record["threshold"]) else ABSENT


def comments(record: dict) -> list[str]:
    """The free text of a report: the notice, then why the answer is what it is."""
    texts = [NOTICE]
    if "error" in record:
        texts.append(f"not classified: {record['error']}")
    if record.get("in_scope") is False:
        texts.append(f"out of scope: {record.get('scope_reason') or 'not a film it was made for'}")
    if record.get("quality_warning"):
        texts.append(f"image quality: {record['quality_warning']}")
    return [text[:TEXT_LIMIT] for text in texts]


def algorithm(sidecar: dict, record: dict):
    """TID 4019: the classifier, its version, and its parameters (model sha256, threshold
    and where it came from, scope checking)."""
    import highdicom as hd

    checked = record.get("in_scope") is not None
    parameters = [
        f"model sha256 {model_sha256(sidecar)}",
        f"decision threshold {float(sidecar['threshold']):.4f}: {threshold_origin(sidecar)}",
        "scope check: " + ("made" if checked else "not made"),
    ]
    return hd.sr.AlgorithmIdentification(
        name=ALGORITHM,
        version=str(sidecar.get("edgexray_version") or "unknown"),
        parameters=[text[:TEXT_LIMIT] for text in parameters],
        manufacturer=PRODUCT,
    )


def measurement_group(header, record: dict, sidecar: dict):
    """TID 1501: the finding, its evaluation and measurements, the source film."""
    import highdicom as hd

    film_uid, model = str(header.SOPInstanceUID), model_sha256(sidecar)
    evaluations = [hd.sr.QualitativeEvaluation(_code(PNEUMONIA), _code(answer(record)))]
    if record.get("in_scope") is not None:
        verdict = YES if record["in_scope"] else NO
        evaluations.append(hd.sr.QualitativeEvaluation(_code(IN_SCOPE), _code(verdict)))
    if record.get("quality_warning"):
        evaluations.append(
            hd.sr.QualitativeEvaluation(_code(IMAGE_QUALITY), _code(INSUFFICIENT_QUALITY))
        )
    measurements = []
    if answer(record) is not INDETERMINATE:  # a number out of scope means nothing
        measurements = [
            hd.sr.Measurement(_code(name), float(record[key]), _code(NO_UNITS))
            for name, key in ((PROBABILITY, "probability"), (THRESHOLD, "threshold"))
        ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=result_uid(film_uid, model, "tracking"), identifier="pneumonia screening"
        ),
        finding_type=_code(PNEUMONIA),
        finding_sites=[hd.sr.FindingSite(_code(LUNG))],
        algorithm_id=algorithm(sidecar, record),
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=str(header.SOPClassUID),
                referenced_sop_instance_uid=film_uid,
            )
        ],
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
    )
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    group[0].ContentSequence.extend(
        hd.sr.TextContentItem(_code(COMMENT), text, contains) for text in comments(record)
    )
    return group


def structured_report(header, record: dict, sidecar: dict):
    """The Comprehensive SR (TID 1500) of one film's record; header is the film's
    (evidence.read_header)."""
    import highdicom as hd
    from pydicom import Dataset

    film_uid, model = str(header.SOPInstanceUID), model_sha256(sidecar)
    observer = hd.sr.ObserverContext(
        observer_type=_code(DEVICE),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=result_uid(model, model, "device"),
            name=PRODUCT,
            manufacturer_name=PRODUCT,
            model_name=ALGORITHM,
        ),
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_code(CHEST_XRAY),
        imaging_measurements=[measurement_group(header, record, sidecar)],
    )
    report = hd.sr.ComprehensiveSR(
        evidence=[header],
        content=content[0],
        series_instance_uid=result_uid(film_uid, model, "series"),
        series_number=SERIES_NUMBER,
        sop_instance_uid=result_uid(film_uid, model, "report"),
        instance_number=1,
        manufacturer=PRODUCT,
        is_complete=True,
        series_description=SERIES_DESCRIPTION,
    )
    scheme = Dataset()  # PS3.3 C.12.1.1.2: a private scheme is named in the object
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "edgexray local codes"
    scheme.CodingSchemeResponsibleOrganization = PRODUCT
    report.CodingSchemeIdentificationSequence = [scheme]
    return report
