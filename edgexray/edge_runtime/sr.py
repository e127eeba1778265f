"""Results back to the reader: a DICOM Structured Report per film, sent to a PACS.

The node (node.py) calls `Outbox.add` for each classified film before it writes the
film's record: the record is queued in outbox/ durably (NAME.record.json). A sender thread
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

import json
import logging
import os
import threading
import time
import warnings
from pathlib import Path

from .infer import InferenceError

log = logging.getLogger("edgexray.node")

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
SCHEME = "99EDGEXRAY"  # a private coding scheme (PS3.16 8.2: 99 prefix, local codes)
# C-STORE answers a PACS can give that mean "kept": success and the warnings (PS3.4 B.2.3).
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
PENDING, READY = ".record.json", ".sr.dcm"  # outbox/: a record to report on, a report to send
FAILED = "failed"  # outbox/failed/: records no report could be built for yet, with why
# How often failed/ is tried again (and at each start): a report that could not be built
# mostly fails for a property of its film, so more often would only repeat the log line.
FAILED_RETRY = 3600.0
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


class Outbox:
    """outbox/: reports waiting for the PACS, and the thread that sends them."""

    def __init__(
        self,
        folder: Path,
        films: tuple[Path, Path],
        destination,
        calling_ae: str,
        classifier,
        retry_initial: float,
        retry_max: float,
    ):
        require_highdicom()
        self.folder = Path(folder)
        self.failed = self.folder / FAILED
        self.failed.mkdir(parents=True, exist_ok=True)
        self.films = films  # where a film may be: incoming/, then classified/ once recorded
        self.destination = destination
        self.calling_ae = calling_ae
        self.model_sha256 = str(classifier.sidecar["sha256"])
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="send-sr", daemon=True)

    def add(self, name: str, record: dict) -> Path:
        """Queue the report of film `name` (a file in one of self.films) durably: its
        record now, the report itself built by the sender thread, so highdicom's time
        (about 0.3 s a report here) never holds up the next film.

        Raises:
            OSError: it could not be written (the worker tries again later).
        """
        from .spool import durable_write

        path = self.folder / f"{Path(name).stem}{PENDING}"
        durable_write(path, [json.dumps({"film": name, "record": record}).encode()])
        self._wake.set()
        return path

    def _open_film(self, name: str):
        """The film, open, from the first of self.films that holds it. The worker moves a
        film from incoming/ to classified/ and never back, so looking in that order cannot
        miss it; once open, the file stays readable whatever rename follows."""
        for folder in self.films:
            try:
                return open(folder / name, "rb")
            except FileNotFoundError:
                continue
        raise FileNotFoundError(f"{name} is gone")

    def _build_pending(self) -> None:
        """Turn each queued record into its report file. A record no report could be made
        for (a film pydicom cannot parse, or gone) moves to failed/ with the reason, and is
        tried again later (`retry_failed`): a result is never dropped silently."""
        from io import BytesIO

        from .spool import durable_write

        for pending in sorted(self.folder.glob(f"*{PENDING}")):
            if self._stopping.is_set():
                return
            try:
                item = json.loads(pending.read_text())
                with self._open_film(item["film"]) as film:
                    report = structured_report(film, item["record"], self.model_sha256)
                buffer = BytesIO()
                report.save_as(buffer, enforce_file_format=True)
            except Exception as err:  # a damaged file fails pydicom and highdicom many ways
                self._keep_failed(pending, err)
                continue
            durable_write(
                pending.with_name(pending.name.replace(PENDING, READY)), [buffer.getvalue()]
            )
            pending.unlink()

    def _keep_failed(self, pending: Path, err: Exception) -> None:
        """Move a record whose report could not be built to failed/, saying why."""
        from .spool import durable_write, utc_now

        log.error(
            "no report for %s yet: %s (kept in %s, tried again every %.0f s and at each start)",
            pending.name,
            err,
            self.failed,
            FAILED_RETRY,
        )
        try:
            item = json.loads(pending.read_text())
        except (OSError, ValueError):  # unreadable itself: kept as it is, for a person
            item = {"queued": pending.read_bytes().decode("utf-8", "replace")}
        item.update(error=str(err)[:1000], failed_at=utc_now())
        durable_write(self.failed / pending.name, [json.dumps(item).encode()])
        pending.unlink(missing_ok=True)

    def retry_failed(self) -> int:
        """Queue every failed record again (a newer edgexray, or a film put back, may make
        its report); return how many."""
        items = sorted(self.failed.glob(f"*{PENDING}"))
        for item in items:
            os.replace(item, self.folder / item.name)
        return len(items)

    def waiting(self) -> list[Path]:
        files = [p for p in self.folder.glob(f"*{READY}") if p.is_file()]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        delay = self.retry_initial
        retried = -float("inf")
        while not self._stopping.is_set():
            try:
                if time.monotonic() - retried >= FAILED_RETRY:
                    retried = time.monotonic()
                    self.retry_failed()
                self._build_pending()
                items = self.waiting()
                if not items:
                    self._wake.wait(1.0)
                    self._wake.clear()
                    continue
                if self._send(items):
                    delay = self.retry_initial
                    continue
                log.warning(
                    "%d report(s) wait for %s; next try in %.1f s",
                    len(self.waiting()),
                    self.destination,
                    delay,
                )
            except Exception as err:  # a full disk: the thread must outlive it, and retry
                log.error("reports for %s: %s; next try in %.1f s", self.destination, err, delay)
            self._stopping.wait(delay)
            delay = min(2 * delay, self.retry_max)

    def _send(self, items: list[Path]) -> bool:
        """Send items on one association; True when every one was stored."""
        from pydicom import dcmread
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        ae.add_requested_context(COMPREHENSIVE_SR, EXPLICIT_LITTLE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        try:
            assoc = ae.associate(
                self.destination.host, self.destination.port, ae_title=self.destination.ae_title
            )
        except Exception as err:  # a name that does not resolve, a refused connection
            log.warning("cannot reach %s: %s", self.destination, err)
            return False
        if not assoc.is_established:
            return False
        sent_all = True
        try:
            for path in items:
                if self._stopping.is_set() or not assoc.is_established:
                    return False
                status = assoc.send_c_store(dcmread(path))
                code = getattr(status, "Status", None)
                if code in STORED_STATUSES:
                    os.unlink(path)
                    log.info("sent %s to %s", path.name, self.destination)
                else:
                    sent_all = False
                    log.warning(
                        "%s refused %s (status %s)",
                        self.destination,
                        path.name,
                        "none" if code is None else f"0x{code:04X}",
                    )
        finally:
            if assoc.is_established:
                assoc.release()
        return sent_all
