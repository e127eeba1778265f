"""The device as a DICOM node: a Storage SCP that classifies each film as it arrives.

The X-ray unit (or a PACS) is configured with this box as a destination (AE title, host,
port) and pushes films by C-STORE. For each film the node

1. checks the association: only the configured calling AE titles (and, when given, source
   addresses) are accepted, everything else gets A-ASSOCIATE-RJ; at most
   `max_associations` at once, each for at most `association_timeout` seconds;
2. refuses an object over `max_object_mb` with a failure status (the size is checked
   before anything is written), writes the film to incoming/ (temporary file, fsync,
   rename, fsync of the folder) and only then answers success. Any failure to store
   answers a failure status, so the modality keeps the film and retries;
3. classifies it in one worker thread with `Classifier.classify`, the code path of
   `predict`, appends the record to results.jsonl (one line, written whole and fsynced)
   and moves the film to classified/. With a destination PACS configured, a DICOM
   Structured Report per film is queued in outbox/ first and sent by `sr.Outbox`.

incoming/ is the durable queue: a film stored but not yet classified when the node stops
(or is killed) is classified at the next start, and the SOP Instance UID names the file,
so a film sent twice is stored and classified once. Every stored film gets exactly one
line in results.jsonl (the state folder and its recovery: spool.py).

pynetdicom and pydicom are imported lazily: `pip install "edgexray[node]"` on a host, the
optional requirements line in a bundle.

    python infer.py serve --model model.tflite --state /var/lib/edgexray-node \\
        --allow-ae MODALITY1 [--allow-ae ...] [--port 11112] [--pacs PACS@10.0.0.5:104]
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import queue
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .infer import EXIT_BAD_INPUT, EXIT_OK, Classifier, InferenceError, check_threads
from .spool import MAX_ATTEMPTS, MEGABYTE, OUTBOX, REPORTS, NodeState, utc_now

log = logging.getLogger("edgexray.node")

NODE_EXTRA = 'pip install "edgexray[node]" (on a device: the node line of requirements.txt)'
# The image storage SOP classes a chest film arrives as (PS3.4 B.5): computed radiography,
# digital X-ray for presentation and for processing, and secondary capture (a film
# digitised or exported by a workstation). Anything else is not negotiated.
STORAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
}
VERIFICATION_CLASS = "1.2.840.10008.1.1"
# Uncompressed films are always accepted; a compressed syntax only when the installed
# pydicom plugins decode it (the dicom extra: JPEG, JPEG 2000, RLE; highdicom brings
# JPEG-LS), so a modality is never told "stored" for a film no decoder here can read: it
# sends that film in another syntax it offered, as DICOM negotiation expects.
UNCOMPRESSED = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old units)
)
COMPRESSED = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)
# C-STORE statuses (PS3.4 B.2.3, PS3.7 C).
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
# A-ASSOCIATE-RJ (result, source, diagnostic), PS3.8 9.3.4: permanent, by the service user.
REJECT_AE_TITLE = (0x01, 0x01, 0x03)  # calling AE title not recognised
REJECT_ADDRESS = (0x01, 0x01, 0x01)  # no reason given (the address is not listed)
REJECT_BUSY = (0x02, 0x03, 0x02)  # transient: local limit exceeded (try again later)
# Connections that never send a valid A-ASSOCIATE-RQ (port scans, garbage) hold a thread
# until the ACSE timeout; they are not counted against max_associations (only requests
# are), and at most this many more connections are open at once.
CONNECTION_HEADROOM = 32
ACSE_TIMEOUT = 10.0  # a modality sends its request at once after connecting
# A UID is digits and dots (PS3.5 9.1), at most 64: safe as a file name as it is.
UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
AE_TITLE_PATTERN = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # no backslash or control
# P-DATA beyond the object limit by more than the command set and PDU headers can explain:
# the association is aborted there, so a huge object is never held whole in memory.
PDATA_SLACK = 64 * 1024


@dataclass(frozen=True)
class Destination:
    """A DICOM node to send results to: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """AE@host:port, e.g. PACS@10.0.0.5:104."""
        match = re.fullmatch(r"([^@]+)@(.+):([0-9]{1,5})", text.strip())
        if not match:
            raise InferenceError(f"destination {text!r} is not AE@host:port")
        ae_title, host, port = match.group(1), match.group(2).strip("[]"), int(match.group(3))
        _check_ae_title(ae_title, "destination AE title")
        if not 1 <= port <= 65535:
            raise InferenceError(f"destination port {port} is not between 1 and 65535")
        return cls(ae_title, host, port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    """How the node listens, whom it accepts, and where it keeps its state.

    Attributes:
        model: the .tflite with its sidecar.
        state: the node's folder: incoming/, classified/, outbox/, results.jsonl.
        allowed_aes: calling AE titles accepted; at least one (nothing is open by default).
        ae_title: this node's own AE title (what the modality calls).
        host, port: where to listen (port 0 picks a free one, for tests).
        allowed_networks: source addresses or networks (CIDR) accepted; empty: any.
        max_associations: associations at once; more are rejected (transient).
        max_object_mb: the largest object accepted; larger ones get a failure status.
        association_timeout: seconds one association may last before it is aborted.
        idle_timeout: seconds without data before an association is aborted.
        tls_cert, tls_key: serve DICOM over TLS with this certificate and key.
        tls_ca: also require a client certificate signed by this CA.
        pacs: send a Structured Report per film there (AE@host:port); None: do not.
        retry_initial, retry_max: the back-off between attempts to reach the PACS.
        threads: interpreter threads (None: the runtime's choice).
        reports: also write each film's HTML report with its heatmap (report.py,
            explain.py) to reports/; the record names it ("report").
    """

    model: Path
    state: Path
    allowed_aes: tuple[str, ...]
    ae_title: str = "EDGEXRAY"
    host: str = "0.0.0.0"
    port: int = 11112
    allowed_networks: tuple[str, ...] = ()
    max_associations: int = 4
    max_object_mb: float = 64.0
    association_timeout: float = 900.0
    idle_timeout: float = 60.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    pacs: Destination | None = None
    retry_initial: float = 5.0
    retry_max: float = 300.0
    threads: int | None = None
    reports: bool = False
    networks: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.allowed_aes:
            raise InferenceError("give at least one --allow-ae: the calling AE title of a modality")
        for title in (self.ae_title, *self.allowed_aes):
            _check_ae_title(title, "AE title")
        if not 0 <= self.port <= 65535:
            raise InferenceError(f"port {self.port} is not between 0 and 65535")
        limits = {
            "max associations": self.max_associations >= 1,
            "max object size": self.max_object_mb > 0,
            "association timeout": self.association_timeout > 0,
            "idle timeout": self.idle_timeout > 0,
            "retry times (the first at most the longest)": 0 < self.retry_initial <= self.retry_max,
        }
        bad = [name for name, ok in limits.items() if not ok]
        if bad:
            raise InferenceError(f"{', '.join(bad)} must be positive")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InferenceError("TLS needs both --tls-cert and --tls-key")
        if self.tls_ca is not None and self.tls_cert is None:
            raise InferenceError("--tls-ca needs --tls-cert and --tls-key")
        check_threads(self.threads)
        try:
            networks = tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)
        except ValueError as err:
            raise InferenceError(f"--allow-address: {err}") from None
        object.__setattr__(self, "networks", networks)

    @property
    def max_object_bytes(self) -> int:
        return int(self.max_object_mb * MEGABYTE)


def _check_ae_title(title: str, what: str) -> None:
    if not AE_TITLE_PATTERN.fullmatch(title) or not title.strip():
        raise InferenceError(
            f"{what} {title!r} must be 1 to 16 printable characters without a backslash"
        )


def transfer_syntaxes() -> list[str]:
    """The transfer syntaxes offered for storage: UNCOMPRESSED, and each of COMPRESSED that
    an installed pydicom plugin decodes."""
    from pydicom.pixels.decoders.base import get_decoder

    decodable = []
    for uid in COMPRESSED:
        try:
            if get_decoder(uid).is_available:
                decodable.append(uid)
        except (NotImplementedError, ValueError):  # no decoder exists for it at all
            pass
    return [*UNCOMPRESSED, *decodable]


def require_node_libraries() -> None:
    """Import pynetdicom and pydicom, or raise a one-line InferenceError naming the extra."""
    try:
        import pydicom  # noqa: F401
        import pynetdicom  # noqa: F401
    except ImportError as err:
        raise InferenceError(f"the DICOM node needs {err.name}: {NODE_EXTRA}") from None


# --- the node --------------------------------------------------------------------------


class Node:
    """A running Storage SCP with its classification worker (and SR sender).

    `start()` recovers the queue, loads the model and listens; `stop()` stops listening,
    lets the worker finish the film in hand, and leaves the rest in incoming/.
    """

    def __init__(self, config: NodeConfig):
        require_node_libraries()
        self.config = config
        self.state = NodeState(config.state)
        self.classifier = Classifier(config.model, config.threads)
        self.outbox = None
        if config.pacs is not None:
            from .sr import Outbox

            self.outbox = Outbox(
                self.state.folder / OUTBOX,
                (self.state.incoming, self.state.classified, self.state.quarantine),
                config.pacs,
                config.ae_title,
                self.classifier,
                config.retry_initial,
                config.retry_max,
            )
        self._queue: queue.Queue[str] = queue.Queue()
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="classify", daemon=True)
        self._pdata: dict[int, int] = {}  # association id -> P-DATA bytes of the message
        self._timers: dict[int, threading.Timer] = {}
        self._sessions: set[int] = set()  # associations past their request, not closed
        self._sessions_lock = threading.Lock()
        self._server = None
        self.address: tuple[str, int] | None = None

    # the lifecycle

    def start(self) -> Node:
        for name in self.state.recover():
            self._queue.put(name)
        if self._queue.qsize():
            log.info(
                "%d film(s) stored before the last stop: classifying them", self._queue.qsize()
            )
        self._worker.start()
        if self.outbox is not None:
            self.outbox.start()
        self._server = self._application_entity().start_server(
            (self.config.host, self.config.port),
            block=False,
            evt_handlers=self._handlers(),
            ssl_context=self._ssl_context(),
        )
        self.address = self._server.server_address[:2]
        log.info(
            "DICOM node %s listening on %s:%d%s; accepting %s",
            self.config.ae_title,
            *self.address,
            " (TLS)" if self.config.tls_cert else "",
            ", ".join(self.config.allowed_aes),
        )
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stopping.set()
        if self._worker.is_alive():
            self._worker.join(timeout)
        if self.outbox is not None:
            self.outbox.stop(timeout)
        for timer in list(self._timers.values()):
            timer.cancel()
        self.state.results.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every stored film is classified (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.02)
        return False

    # the network side

    def _application_entity(self):
        from pynetdicom import AE

        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = self.config.max_associations + CONNECTION_HEADROOM
        ae.network_timeout = self.config.idle_timeout
        ae.acse_timeout = min(ACSE_TIMEOUT, self.config.idle_timeout)
        ae.dimse_timeout = self.config.idle_timeout
        ae.maximum_pdu_size = 64 * 1024
        ae.add_supported_context(VERIFICATION_CLASS)
        syntaxes = transfer_syntaxes()
        for sop_class in STORAGE_CLASSES:
            ae.add_supported_context(sop_class, syntaxes)
        return ae

    def _ssl_context(self):
        if self.config.tls_cert is None:
            return None
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
            if self.config.tls_ca is not None:
                context.load_verify_locations(self.config.tls_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as err:
            raise InferenceError(f"TLS certificate or key not usable: {err}") from None
        return context

    def _handlers(self):
        from pynetdicom import evt

        return [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_CONN_CLOSE, self._on_close),
            (evt.EVT_DATA_RECV, self._on_data),
            (evt.EVT_DIMSE_RECV, self._on_message),
            (evt.EVT_C_ECHO, lambda event: SUCCESS),
            (evt.EVT_C_STORE, self._on_store),
        ]

    def _rejection(self, assoc) -> tuple[int, int, int] | None:
        """Why an association request is refused, or None to go on negotiating."""
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        if calling not in self.config.allowed_aes:
            log.warning(
                "rejected %s from %s: AE title not allowed", calling, assoc.requestor.address
            )
            return REJECT_AE_TITLE
        if self.config.networks:
            try:
                address = ipaddress.ip_address(assoc.requestor.address)
            except ValueError:
                address = None
            if address is None or not any(address in n for n in self.config.networks):
                log.warning("rejected %s from %s: address not allowed", calling, address)
                return REJECT_ADDRESS
        return None

    def _on_requested(self, event) -> None:
        reason = self._rejection(event.assoc)
        with self._sessions_lock:
            if reason is None and len(self._sessions) >= self.config.max_associations:
                log.warning(
                    "rejected %s: %d associations at once already",
                    event.assoc.requestor.address,
                    len(self._sessions),
                )
                reason = REJECT_BUSY
            if reason is None:
                self._sessions.add(id(event.assoc))
        if reason is not None:
            # As pynetdicom's own rejection does: kill() waits until the A-ASSOCIATE-RJ
            # is sent and the peer has closed, before the server drops the socket.
            event.assoc.acse.send_reject(*reason)
            event.assoc.kill()

    def _on_open(self, event) -> None:
        # The whole association, not only its silences, has a time limit: a peer trickling
        # one byte a minute would otherwise hold a slot forever.
        timer = threading.Timer(self.config.association_timeout, self._expire, (event.assoc,))
        timer.daemon = True
        self._timers[id(event.assoc)] = timer
        timer.start()

    def _expire(self, assoc) -> None:
        log.warning(
            "aborted the association from %s: over %.0f s",
            assoc.requestor.address,
            self.config.association_timeout,
        )
        assoc.abort()

    def _on_close(self, event) -> None:
        timer = self._timers.pop(id(event.assoc), None)
        if timer is not None:
            timer.cancel()
        self._pdata.pop(id(event.assoc), None)
        with self._sessions_lock:
            self._sessions.discard(id(event.assoc))

    def _on_data(self, event) -> None:
        data = event.data
        if data[:1] != b"\x04":  # only P-DATA-TF carries the object
            return
        key = id(event.assoc)
        self._pdata[key] = self._pdata.get(key, 0) + len(data)
        if self._pdata[key] > self.config.max_object_bytes + PDATA_SLACK:
            log.warning(
                "aborted the association from %s: an object over %.0f MB",
                event.assoc.requestor.address,
                self.config.max_object_mb,
            )
            self._pdata[key] = 0
            threading.Thread(target=event.assoc.abort, daemon=True).start()

    def _on_message(self, event) -> None:
        self._pdata[id(event.assoc)] = 0  # a whole message arrived: count the next afresh

    def _on_store(self, event) -> int:
        """Store one film durably, then answer; every failure answers a failure status."""
        request = event.request
        uid = str(request.AffectedSOPInstanceUID or "")
        calling = event.assoc.requestor.ae_title.strip()
        size = request.DataSet.getbuffer().nbytes
        if size > self.config.max_object_bytes:
            log.warning(
                "refused %s from %s: %.1f MB is over the %.0f MB limit",
                uid,
                calling,
                size / MEGABYTE,
                self.config.max_object_mb,
            )
            return OUT_OF_RESOURCES
        if len(uid) > 64 or not UID_PATTERN.fullmatch(uid):
            log.warning("refused an object from %s: SOP Instance UID %r is not valid", calling, uid)
            return CANNOT_UNDERSTAND
        name = self.state.film_name(uid)
        try:
            stored = self.state.store(name, self._file_chunks(event, calling))
        except Exception as err:  # a full or read-only disk: the modality must retry
            log.error("could not store %s from %s: %s", uid, calling, err)
            return OUT_OF_RESOURCES
        if stored:
            self._queue.put(name)
            log.info("stored %s from %s (%.0f kB)", uid, calling, size / 1024)
        else:
            log.info("already have %s (sent again by %s)", uid, calling)
        return SUCCESS

    @staticmethod
    def _file_chunks(event, calling: str):
        """The DICOM file: preamble, file meta (naming the sender), the dataset as sent."""
        from io import BytesIO

        from pydicom.filewriter import write_file_meta_info

        meta = event.file_meta
        meta.SourceApplicationEntityTitle = calling
        header = BytesIO()
        header.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(header, meta, enforce_standard=True)
        return (header.getvalue(), event.request.DataSet.getbuffer())

    # the classification side

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                name = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._classify(name)
            except OSError as err:  # a full disk: the film stays queued on disk
                log.error("could not record %s (%s); retrying in 5 s", name, err)
                self._queue.put(name)
                self._stopping.wait(5.0)
            except Exception as err:  # never let one film stop the node
                log.exception("classifying %s failed: %s", name, err)
                self._queue.put(name)
                self._stopping.wait(5.0)
            finally:
                self._queue.task_done()

    def _classify(self, name: str) -> None:
        source = self.state.incoming / name
        received = os.stat(source).st_mtime
        began = self.state.begin(name)
        destination, film = self.state.classified, None
        if began > MAX_ATTEMPTS:
            log.error("quarantined %s: the node stopped %d times classifying it", name, began - 1)
            destination = self.state.quarantine
            record = {"path": str(source), "error": quarantine_reason(began - 1)}
        else:
            try:
                record, film = self.classifier.classify_film(source)
            except OSError:
                raise  # the disk, not the film: tried again
            except Exception as err:  # a film no reader expected: its record says so, once
                log.exception("classifying %s failed", name)
                record = {"path": str(source), "error": f"could not be classified ({err})"}
        record["path"] = str(destination / name)
        record.update(film_identity(source))
        record["received_at"] = datetime.datetime.fromtimestamp(
            received, datetime.timezone.utc
        ).isoformat(timespec="microseconds")
        if self.config.reports and film is not None:
            try:
                record["report"] = str(self._write_report(film, record))
            except Exception as err:  # the record matters more than its page
                log.error("no HTML report for %s: %s", name, err)
        if self.outbox is not None:
            self.outbox.add(name, record)
        record["classified_at"] = utc_now()
        self.state.results.append(record)
        self.state.finish(name, destination)
        log.info("%s: %s", name, record.get("label") or f"error: {record.get('error')}")

    def _write_report(self, film, record: dict) -> Path:
        """The HTML report (heatmap included) of a film just classified (as read), as
        `infer.py --report` writes one for a batch; named by the film's UID, so a film
        classified again after a crash rewrites its own report."""
        from . import explain, report
        from .infer import write_atomic

        entries: list = []
        for _ in explain.explain_records(self.classifier, [(record, film)], entries=entries):
            pass
        entry = entries[0]
        folder = self.state.folder / REPORTS
        folder.mkdir(exist_ok=True)
        path = folder / f"{record['sop_instance_uid']}.html"
        page = report.render(
            [entry],
            self.classifier.sidecar,
            self.config.model,
            explain.legend_html(explain.DEFAULT_GRID),
        )
        write_atomic(path, page.encode("utf-8"))
        return path


def quarantine_reason(stops: int) -> str:
    """The error of a quarantined film's record (and of its report to the PACS)."""
    return (
        f"quarantined: the node stopped {stops} times while classifying this film (out of "
        "memory or a crash in a decoder); not classified, a person must read it"
    )


def film_identity(path: Path) -> dict:
    """sop_instance_uid and calling_ae from the stored file's meta information."""
    from pydicom.filereader import read_file_meta_info

    try:
        meta = read_file_meta_info(path)
    except Exception:  # the node wrote it, but a damaged disk can still fail here
        meta = {}
    return {
        "sop_instance_uid": str(getattr(meta, "MediaStorageSOPInstanceUID", Path(path).stem)),
        "calling_ae": str(getattr(meta, "SourceApplicationEntityTitle", "")).strip(),
    }


# --- the command line: `infer.py serve` ----------------------------------------------


# The plain options of `infer.py serve`: each sets the NodeConfig field of its name (dashes
# for underscores) and takes that field's default.
OPTIONS = (
    ("--ae-title", str, "this node's AE title"),
    ("--host", str, "address to listen on"),
    ("--port", int, "port to listen on"),
    ("--max-associations", int, "associations at once; more are rejected (try later)"),
    ("--max-object-mb", float, "largest object accepted; larger ones get a failure status"),
    ("--association-timeout", float, "seconds one association may last"),
    ("--idle-timeout", float, "seconds without data before an association is aborted"),
    ("--tls-cert", Path, "serve DICOM over TLS with this certificate (PEM)"),
    ("--tls-key", Path, "the certificate's private key (PEM)"),
    ("--tls-ca", Path, "require client certificates signed by this CA (PEM)"),
    ("--retry-initial", float, "seconds before the first retry to reach the PACS (doubling)"),
    ("--retry-max", float, "longest wait between retries to reach the PACS"),
    ("--threads", int, "interpreter threads (default: the runtime's choice)"),
)


def _field(flag: str) -> str:
    return flag[2:].replace("-", "_")


def parser(prog: str = "infer.py serve", default_model: Path | None = None):
    from dataclasses import fields

    from .infer import _Parser

    defaults = {f.name: f.default for f in fields(NodeConfig)}
    p = _Parser(
        prog=prog,
        description="Run a DICOM Storage SCP that classifies each film it receives and "
        "appends its record to STATE/results.jsonl (and sends a Structured Report to --pacs).",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=default_model,
        help="model file, its sidecar MODEL.json next to it",
    )
    p.add_argument(
        "--state",
        type=Path,
        required=True,
        help="folder for incoming/ classified/ outbox/ results.jsonl",
    )
    p.add_argument(
        "--allow-ae",
        action="append",
        required=True,
        metavar="AE_TITLE",
        help="a calling AE title to accept (repeat for each modality)",
    )
    p.add_argument(
        "--allow-address",
        action="append",
        default=[],
        metavar="IP_OR_CIDR",
        help="a source address or network to accept (default: any)",
    )
    p.add_argument("--pacs", metavar="AE@HOST:PORT", help="send a Structured Report per film there")
    p.add_argument(
        "--reports", action="store_true", help="also write each film's HTML report in STATE/reports"
    )
    for flag, kind, text in OPTIONS:
        default = defaults[_field(flag)]
        shown = "" if default is None else f" (default: {default})"
        p.add_argument(flag, type=kind, default=default, help=text + shown)
    return p


def config_from(args) -> NodeConfig:
    if args.model is None:
        raise InferenceError("give --model MODEL.tflite (with its sidecar MODEL.json next to it)")
    return NodeConfig(
        model=args.model,
        state=args.state,
        allowed_aes=tuple(args.allow_ae),
        allowed_networks=tuple(args.allow_address),
        pacs=Destination.parse(args.pacs) if args.pacs else None,
        reports=args.reports,
        **{_field(flag): getattr(args, _field(flag)) for flag, _, _ in OPTIONS},
    )


def serve(config: NodeConfig) -> int:
    """Run the node until SIGTERM or Ctrl-C; return the exit code."""
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    node = Node(config)
    try:
        node.start()
    except OSError as err:  # the port is taken, or below 1024 without the right
        node.stop()
        raise InferenceError(
            f"cannot listen on {config.host}:{config.port} ({err.strerror or err})"
        ) from None
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        log.info("stopping: films not yet classified stay in %s", node.state.incoming)
        node.stop()
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


def main(argv=None, prog: str = "infer.py serve", default_model: Path | None = None) -> int:
    """`infer.py serve ...`: run the node; return the exit code instead of exiting."""
    try:
        args = parser(prog, default_model).parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for chatty in ("pynetdicom", "highdicom"):  # one line per association or report
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return serve(config_from(args))
    except InferenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:  # the state folder cannot be made or written
        print(f"error: {err.strerror or err}: {err.filename or ''}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
