"""The node's network side: a DICOM Storage SCP (pynetdicom) that stores films durably.

For each association it checks the calling AE title (and, when given, the source
address): anything else gets A-ASSOCIATE-RJ; at most `max_associations` at once, each for
at most `association_timeout` seconds. For each C-STORE it refuses an object over
`max_object_mb` (the size is checked before anything is written), writes the film to
incoming/ (spool.py: temporary file, fsync, rename, fsync of the folder) and only then
answers success; any failure to store answers a failure status, so the modality keeps
the film and retries. Each film stored is handed to the worker (worker.py).

pynetdicom and pydicom are imported lazily, when the node starts.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import InferenceError
from ..readers.dicom import FILM_CLASSES
from .config import MEGABYTE, NodeConfig
from .spool import NodeState

log = logging.getLogger("edgexray.node")

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
# Connections that have not sent their A-ASSOCIATE-RQ yet (a modality sends it at once;
# port scans and garbage never do) wait at most ACSE_TIMEOUT; they are not counted against
# max_associations (only requests are). At most this many wait from one source, and
# MAX_WAITING from all: beyond, the oldest waiting one is closed, so a host opening
# connections that send nothing can never lock the modalities out.
MAX_WAITING_PER_SOURCE = 4
MAX_WAITING = 16
# pynetdicom counts a connection until its thread has ended, and would refuse a modality
# while dropped ones wind down: the limits above and max_associations are the ones that
# hold; this only bounds threads if they ever failed.
PYNETDICOM_LIMIT = 1000
REFUSAL_LOG_SECONDS = 60.0
ACSE_TIMEOUT = 10.0  # a modality sends its request at once after connecting
# A UID is digits and dots (PS3.5 9.1), at most 64: safe as a file name as it is.
UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)*")
# P-DATA beyond the object limit by more than the command set and PDU headers can explain:
# the association is aborted there, so a huge object is never held whole in memory.
PDATA_SLACK = 64 * 1024


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


class StorageService:
    """The Storage SCP's handlers: associations checked and bounded, films stored durably
    and handed on with `on_stored(name)`."""

    def __init__(self, config: NodeConfig, state: NodeState, on_stored: Callable[[str], None]):
        self.config = config
        self.state = state
        self.on_stored = on_stored
        self._pdata: dict[int, int] = {}  # association id -> P-DATA bytes of the message
        self._timers: dict[int, threading.Timer] = {}
        self._sessions: set[int] = set()  # associations past their request, not closed
        # Connections yet to send their request, by source, oldest first, and when each came.
        self._waiting: dict[str, dict[int, object]] = {}
        self._opened: dict[int, float] = {}
        self._refused: dict[tuple[str, str], float] = {}  # (source, why) -> last log line
        self._sessions_lock = threading.Lock()
        self._server = None
        self.address: tuple[str, int] | None = None

    def start(self) -> None:
        """Listen (raises OSError when the port is taken)."""
        self._server = self._application_entity().start_server(
            (self.config.host, self.config.port),
            block=False,
            evt_handlers=self._handlers(),
            ssl_context=self._ssl_context(),
        )
        self.address = self._server.server_address[:2]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        for timer in list(self._timers.values()):
            timer.cancel()

    def _application_entity(self):
        from pynetdicom import AE

        ae = AE(ae_title=self.config.ae_title)
        ae.maximum_associations = PYNETDICOM_LIMIT
        ae.network_timeout = self.config.idle_timeout
        ae.acse_timeout = min(ACSE_TIMEOUT, self.config.idle_timeout)
        ae.dimse_timeout = self.config.idle_timeout
        ae.maximum_pdu_size = 64 * 1024
        ae.add_supported_context(VERIFICATION_CLASS)
        syntaxes = transfer_syntaxes()
        for sop_class in FILM_CLASSES:
            ae.add_supported_context(sop_class, syntaxes)
        return ae

    def _ssl_context(self):
        if self.config.tls_cert is None:
            return None
        import ssl

        for flag, path in (
            ("--tls-cert", self.config.tls_cert),
            ("--tls-key", self.config.tls_key),
            ("--tls-ca", self.config.tls_ca),
        ):
            if path is not None and not Path(path).is_file():
                raise InferenceError(f"{flag} {path}: no such file")
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
        if not self._address_allowed(assoc.requestor.address):
            log.warning(
                "rejected %s from %s: address not allowed", calling, assoc.requestor.address
            )
            return REJECT_ADDRESS
        return None

    def _address_allowed(self, text: str) -> bool:
        if not self.config.networks:
            return True
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(address in network for network in self.config.networks)

    def _on_requested(self, event) -> None:
        self._admitted(event.assoc)
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
        assoc = event.assoc
        address = assoc.requestor.address
        # Refused before any PDU is read, so a connection from elsewhere never holds one
        # of the server's threads until the ACSE timeout.
        if not self._address_allowed(address):
            self._refuse(assoc, address, "address not allowed")
            return
        with self._sessions_lock:
            mine = self._waiting.setdefault(address, {})
            mine[id(assoc)] = assoc  # in arrival order: the oldest first
            evicted = [mine.pop(next(iter(mine)))] if len(mine) > MAX_WAITING_PER_SOURCE else []
            everyone = [a for waiting in self._waiting.values() for a in waiting.values()]
            if len(everyone) > MAX_WAITING:
                oldest = min(everyone, key=lambda a: self._opened.get(id(a), 0.0))
                self._waiting[oldest.requestor.address].pop(id(oldest), None)
                evicted.append(oldest)
            self._opened[id(assoc)] = time.monotonic()
        # Connections that send nothing would otherwise take every slot and lock the
        # modalities out; a modality sends its request at once, so the oldest go.
        for stale in evicted:
            self._refuse(stale, stale.requestor.address, "too many connections waiting")
        # The whole association, not only its silences, has a time limit: a peer trickling
        # one byte a minute would otherwise hold a slot forever.
        timer = threading.Timer(self.config.association_timeout, self._expire, (assoc,))
        timer.daemon = True
        self._timers[id(assoc)] = timer
        timer.start()

    def _admitted(self, assoc) -> None:
        """The connection sent its association request: it no longer waits."""
        with self._sessions_lock:
            self._waiting.get(assoc.requestor.address, {}).pop(id(assoc), None)

    def _refuse(self, assoc, address: str, why: str) -> None:
        """Close a connection that has not sent its association request (no A-ABORT: the
        protocol has none before the request); logged at most once a minute per source
        and cause."""
        now, key = time.monotonic(), (address, why)
        if now - self._refused.get(key, -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
            self._refused[key] = now
            log.warning("refused a connection from %s: %s", address, why)
        try:  # the reader then sees the connection closed, as if the peer had closed it
            assoc.dul.socket.socket.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):  # closed already
            pass

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
            self._opened.pop(id(event.assoc), None)
            waiting = self._waiting.get(event.assoc.requestor.address)
            if waiting is not None:
                waiting.pop(id(event.assoc), None)
                if not waiting:
                    del self._waiting[event.assoc.requestor.address]

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
            self.on_stored(name)
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
