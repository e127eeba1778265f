"""The outbox: results waiting for the PACS, and the threads that build and send them.

Each kind of result is a lane (`KINDS`): the Structured Report of every film (sr.py) and,
with the node's --explain, the heatmap of every film that got an answer (heatmap.py).
The worker hands each classified film to the outbox (`Outbox.add`) before it writes the
film's record: the record is queued in outbox/ durably, once per lane (NAME.record.json,
NAME.heatmap.json). Each lane has a thread of its own that builds its objects from the
queue (NAME.sr.dcm, NAME.sc.dcm, written durably), and another that delivers them by
C-STORE on an association of its own and deletes each once the PACS answered success (so
the next object is built while the PACS takes its time to answer); the sender backs off
(doubling, up to retry_max) while the PACS is down. So a report never waits behind a
heatmap, and both stay in outbox/ across restarts until the PACS has them. A queued item
no object could be built for waits in outbox/failed/ with the reason, logged, and is
tried again every FAILED_RETRY seconds and at each start: never dropped.

A heatmap needs the film's pixels and its occlusion map (about 26 model runs): the worker
hands the film it classified to the heatmap lane in memory (at most MEMORY_BYTES of pixels,
so a burst of large films cannot fill the memory), and the lane makes the map with a model
interpreter of its own, beside the worker's. A film not in memory (after a restart, or in
a long burst) is read again from where the node keeps it. Reports come first: the heatmap
lane builds nothing while reports wait to be built, so in a burst every film's answer
reaches the PACS before the pictures that explain it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from ..classifier import Classifier
from ..explain import DEFAULT_GRID, occlusion_map
from .evidence import EXPLICIT_LITTLE, SECONDARY_CAPTURE, read_header, require_highdicom
from .heatmap import heatmap_capture
from .spool import durable_write, private_folder, utc_now
from .sr import COMPREHENSIVE_SR, structured_report

log = logging.getLogger("edgexray.node")

# C-STORE answers a PACS can give that mean "kept": success and the warnings (PS3.4 B.2.3).
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
FAILED = "failed"  # outbox/failed/: queued items no object could be built for yet, with why
# How often failed/ is tried again (and at each start): an object that could not be built
# mostly fails for a property of its film, so more often would only repeat the log line.
FAILED_RETRY = 3600.0
# Items built before the builder looks again at whether it must let reports go first.
BUILD_BATCH = 4
# Pixels the worker hands the heatmap lane in memory (films as classified, 8-bit); beyond,
# the lane reads the films again. 64 MB: 16 films of 2000 x 2000, thousands of small ones.
MEMORY_BYTES = 64 * 2**20
NETWORK_TIMEOUT = 30


@dataclass(frozen=True)
class Kind:
    """One kind of result: the suffixes of its queued item and of its built object in
    outbox/, and its SOP class (the presentation context its lane asks the PACS for)."""

    name: str
    queued: str
    ready: str
    sop_class: str


REPORT = Kind("report", ".record.json", ".sr.dcm", COMPREHENSIVE_SR)
HEATMAP = Kind("heatmap", ".heatmap.json", ".sc.dcm", SECONDARY_CAPTURE)
KINDS = (REPORT, HEATMAP)


def wants_heatmap(record: dict) -> bool:
    """A heatmap is sent for a film that got an answer: read, and not out of scope (the
    map of a film the model was not made for would dress a meaningless number up)."""
    return "error" not in record and record.get("in_scope") is not False


def _no_delay(event) -> None:
    """Send each write at once: a C-STORE is a small command, the data set, then a wait
    for a small answer, which Nagle's algorithm would hold back for a delayed ACK (about
    40 ms a store on Linux)."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Lane:
    """One kind's queue in outbox/ and its two threads: one builds the objects, one sends
    them (while the PACS takes its time to answer a store, the next object is built)."""

    def __init__(self, outbox: Outbox, kind: Kind, build: Callable[[dict, Path], bytes]):
        self.outbox, self.kind, self.build = outbox, kind, build
        self.ready = threading.Event()  # set when an object was built
        self._threads = [
            threading.Thread(target=self._building, name=f"build-{kind.name}", daemon=True),
            threading.Thread(target=self._sending, name=f"send-{kind.name}", daemon=True),
        ]

    @property
    def folder(self) -> Path:
        return self.outbox.folder

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def queued(self) -> list[Path]:
        return sorted(self.folder.glob(f"*{self.kind.queued}"))

    def waiting(self) -> list[Path]:
        files = [p for p in self.folder.glob(f"*{self.kind.ready}") if p.is_file()]
        return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def retry_failed(self) -> int:
        """Queue every failed item again (a newer edgexray, or a film put back, may build
        it); return how many."""
        items = sorted((self.folder / FAILED).glob(f"*{self.kind.queued}"))
        for item in items:
            os.replace(item, self.folder / item.name)
        return len(items)

    def build_queued(self, limit: int = BUILD_BATCH) -> int:
        """Turn up to limit queued items into objects ready to send; return how many were
        taken. An item no object can be made for (a film pydicom cannot parse, or gone)
        moves to failed/ with the reason, and is tried again later: a result is never
        dropped silently."""
        taken = 0
        for queued in self.queued()[:limit]:
            if self.outbox.stopping.is_set() or self.outbox.yields(self.kind):
                break
            taken += 1
            try:
                item = json.loads(queued.read_text())
                data = self.build(item["record"], self.outbox.locate(item["film"]))
            except Exception as err:  # a damaged file fails pydicom and highdicom many ways
                self._keep_failed(queued, err)
                continue
            durable_write(
                queued.with_name(queued.name.replace(self.kind.queued, self.kind.ready)), [data]
            )
            queued.unlink()
            self.ready.set()
        return taken

    def _keep_failed(self, queued: Path, err: Exception) -> None:
        failed = self.folder / FAILED
        log.error(
            "no %s for %s yet: %s (kept in %s, tried again every %.0f s and at each start)",
            self.kind.name,
            queued.name,
            err,
            failed,
            FAILED_RETRY,
        )
        try:
            item = json.loads(queued.read_text())
        except (OSError, ValueError):  # unreadable itself: kept as it is, for a person
            item = {"queued": queued.read_bytes().decode("utf-8", "replace")}
        item.update(error=str(err)[:1000], failed_at=utc_now())
        durable_write(failed / queued.name, [json.dumps(item).encode()])
        queued.unlink(missing_ok=True)

    def _building(self) -> None:
        outbox, wake = self.outbox, self.outbox.wake[self.kind.name]
        retried = -float("inf")
        while not outbox.stopping.is_set():
            try:
                if time.monotonic() - retried >= FAILED_RETRY:
                    retried = time.monotonic()
                    self.retry_failed()
                if self.build_queued():
                    continue
            except Exception as err:  # a full disk: the thread must outlive it, and retry
                log.error("building %ss: %s; next try in %.1f s", self.kind.name, err, 5.0)
                outbox.stopping.wait(5.0)
                continue
            wake.wait(0.2 if self.queued() else 1.0)  # 0.2: waiting for reports to go first
            wake.clear()

    def _sending(self) -> None:
        outbox = self.outbox
        delay = outbox.retry_initial
        while not outbox.stopping.is_set():
            try:
                if not self.waiting():
                    self.ready.wait(1.0)
                    self.ready.clear()
                    continue
                if self._send():
                    delay = outbox.retry_initial
                    continue
                log.warning(
                    "%d %s(s) wait for %s; next try in %.1f s",
                    len(self.waiting()),
                    self.kind.name,
                    outbox.destination,
                    delay,
                )
            except Exception as err:  # the thread must outlive anything, and retry
                log.error(
                    "sending %ss to %s: %s; next try in %.1f s",
                    self.kind.name,
                    outbox.destination,
                    err,
                    delay,
                )
            outbox.stopping.wait(delay)
            delay = min(2 * delay, outbox.retry_max)

    def _send(self) -> bool:
        """Send what is ready on one association, and what gets ready meanwhile; True when
        every object was stored."""
        from pynetdicom import AE, evt

        destination = self.outbox.destination
        ae = AE(ae_title=self.outbox.calling_ae)
        ae.add_requested_context(self.kind.sop_class, EXPLICIT_LITTLE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT
        try:
            assoc = ae.associate(
                destination.host,
                destination.port,
                ae_title=destination.ae_title,
                evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)],
            )
        except Exception as err:  # a name that does not resolve, a refused connection
            log.warning("cannot reach %s: %s", destination, err)
            return False
        if not assoc.is_established:
            return False
        tried: set[Path] = set()
        refused = False
        try:
            while items := [path for path in self.waiting() if path not in tried]:
                for path in items:
                    if self.outbox.stopping.is_set() or not assoc.is_established:
                        return False
                    tried.add(path)
                    status = assoc.send_c_store(path)
                    code = getattr(status, "Status", None)
                    if code in STORED_STATUSES:
                        os.unlink(path)
                        log.info("sent %s to %s", path.name, destination)
                    else:
                        refused = True
                        log.warning(
                            "%s refused %s (status %s)",
                            destination,
                            path.name,
                            "none" if code is None else f"0x{code:04X}",
                        )
        finally:
            if assoc.is_established:
                assoc.release()
        return not refused


class Outbox:
    """outbox/: results waiting for the PACS, one lane per kind; a sink of the node's
    worker."""

    needs_map = False  # the heatmap lane makes its maps itself, off the worker's thread

    def __init__(
        self,
        folder: Path,
        films: tuple[Path, ...],
        destination,
        calling_ae: str,
        classifier: Classifier,
        retry_initial: float,
        retry_max: float,
        heatmaps: bool = False,
        threads: int | None = None,
    ):
        require_highdicom()
        self.folder = private_folder(Path(folder))
        private_folder(self.folder / FAILED)
        self.films = films  # where a film may be: incoming/, then classified/ once recorded
        self.destination = destination
        self.calling_ae = calling_ae
        self.sidecar = classifier.sidecar
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.stopping = threading.Event()
        self.lanes = [Lane(self, REPORT, self._report)]
        self.explainer = None
        self._in_memory: dict[str, tuple] = {}
        self._memory_bytes = 0
        self._memory_lock = threading.Lock()
        if heatmaps:
            # An interpreter of its own: the worker's is busy with the next film.
            self.explainer = Classifier(classifier.model_path, threads, classifier.check_scope)
            self.lanes.append(Lane(self, HEATMAP, self._heatmap))
        self.wake = {lane.kind.name: threading.Event() for lane in self.lanes}

    # --- the sink ----------------------------------------------------------------------

    def add(self, film, explanation=None) -> None:
        """Queue the results of one classified film (its record names the film's file, in
        one of self.films) durably: its record now, once per lane; the objects are built
        by the lanes' threads, so highdicom's time never holds up the next film.

        Raises:
            OSError: it could not be written (the worker tries again later).
        """
        record = film.record
        name = Path(record["path"]).name
        item = json.dumps({"film": name, "record": record}).encode()
        stem = Path(name).stem
        for lane in self.lanes:
            if lane.kind is HEATMAP and not wants_heatmap(record):
                continue
            if lane.kind is HEATMAP:
                self._remember(name, film, explanation)
            durable_write(self.folder / f"{stem}{lane.kind.queued}", [item])
            self.wake[lane.kind.name].set()

    def close(self) -> None:
        pass

    def _remember(self, name: str, film, explanation) -> None:
        if film.film is None:
            return
        size = film.film.nbytes + film.resized.nbytes
        with self._memory_lock:
            if self._memory_bytes + size <= MEMORY_BYTES and name not in self._in_memory:
                self._in_memory[name] = (film.film, film.resized, explanation, size)
                self._memory_bytes += size

    def _recall(self, name: str) -> tuple | None:
        with self._memory_lock:
            kept = self._in_memory.pop(name, None)
            if kept is not None:
                self._memory_bytes -= kept[3]
        return kept[:3] if kept is not None else None

    # --- building --------------------------------------------------------------------

    def locate(self, name: str) -> Path:
        """Where the film is now: the first of self.films that holds it. The worker moves
        a film from incoming/ to classified/ and never back, so looking in that order
        cannot miss it."""
        for folder in self.films:
            if (folder / name).is_file():
                return folder / name
        raise FileNotFoundError(f"{name} is gone")

    def _report(self, record: dict, film: Path) -> bytes:
        with self._reopen(film) as handle:
            header = read_header(handle)
        return _file_bytes(structured_report(header, record, self.sidecar))

    def _heatmap(self, record: dict, film: Path) -> bytes:
        name = film.name
        kept = self._recall(name)
        if kept is None:
            again = self.explainer.classify_film(film)
            if again.film is None and not film.exists():  # moved by the worker meanwhile
                again = self.explainer.classify_film(self.locate(name))
            if again.film is None:
                raise ValueError(again.record.get("error", "the film cannot be read"))
            kept = (again.film, again.resized, None)
        pixels, resized, explanation = kept
        if explanation is None:
            explanation = occlusion_map(self.explainer, resized, DEFAULT_GRID)
        with self._reopen(film) as handle:
            header = read_header(handle)
        return _file_bytes(heatmap_capture(header, pixels, explanation, self.sidecar))

    def _reopen(self, film: Path):
        """The film's file, open: looked for again if the worker moved it meanwhile."""
        try:
            return open(film, "rb")
        except FileNotFoundError:
            return open(self.locate(film.name), "rb")

    # --- the threads -----------------------------------------------------------------

    def yields(self, kind: Kind) -> bool:
        """True when kind waits for another: a heatmap is not built while reports are
        queued (both need the same processor, and the answer matters more)."""
        return kind is not REPORT and bool(self.lanes[0].queued())

    def waiting(self) -> list[Path]:
        """Every object built and not yet stored by the PACS."""
        return [path for lane in self.lanes for path in lane.waiting()]

    def retry_failed(self) -> int:
        return sum(lane.retry_failed() for lane in self.lanes)

    def films_waiting(self) -> set[str]:
        """The SOP Instance UIDs of films with a result still in the outbox (queued, built
        or failed): retention keeps those films."""
        suffixes = [kind.queued for kind in KINDS] + [kind.ready for kind in KINDS]
        found = set()
        for folder in (self.folder, self.folder / FAILED):
            for path in folder.iterdir():
                for suffix in suffixes:
                    if path.name.endswith(suffix) and not path.name.startswith("."):
                        found.add(path.name[: -len(suffix)])
        return found

    def start(self) -> None:
        for lane in self.lanes:
            lane.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        for event in self.wake.values():
            event.set()
        for lane in self.lanes:
            lane.join(timeout)


def _file_bytes(dataset) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
