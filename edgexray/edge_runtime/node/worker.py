"""The node's classification worker: one thread that classifies each stored film, hands
it to the node's sinks, records it and moves it out of the queue.

For each film, in this order (spool.py says why the order makes every film get exactly
one record): the attempt is counted; the film is classified with `Classifier`, the code
path of `predict` (a film the node died on twice is quarantined instead); the sinks take
it (the per-film HTML page, the Structured Report queued in the outbox); its record is
appended to results.jsonl; the film moves to classified/ (or quarantine/).
"""

from __future__ import annotations

import datetime
import logging
import os
import queue
import threading
import time
from pathlib import Path

from ..classifier import Classified, Classifier
from ..explain import occlusion_map
from .retention import PRUNE_EVERY
from .spool import MAX_ATTEMPTS, NodeState, utc_now

log = logging.getLogger("edgexray.node")


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


class Worker:
    """The queue of stored films and the thread that works through it."""

    def __init__(self, state: NodeState, classifier: Classifier, sinks: list, housekeeping=None):
        self.state = state
        self.classifier = classifier
        self.sinks = sinks
        # Called between films, at the start and every PRUNE_EVERY seconds (retention).
        self.housekeeping = housekeeping
        self._next_housekeeping = 0.0
        self._queue: queue.Queue[str] = queue.Queue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="classify", daemon=True)

    def put(self, name: str) -> None:
        self._queue.put(name)

    def waiting(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Let the film in hand finish; the rest stay in incoming/."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every stored film is classified (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.02)
        return False

    def _work(self) -> None:
        while not self._stopping.is_set():
            self._housekeeping()
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

    def _housekeeping(self) -> None:
        if self.housekeeping is None or time.monotonic() < self._next_housekeeping:
            return
        self._next_housekeeping = time.monotonic() + PRUNE_EVERY
        try:
            self.housekeeping()
        except Exception as err:  # a retention failure must not stop classifying
            log.error("retention: %s (tried again in %.0f s)", err, PRUNE_EVERY)

    def _classify(self, name: str) -> None:
        source = self.state.incoming / name
        received = os.stat(source).st_mtime
        began = self.state.begin(name)
        destination = self.state.classified
        if began > MAX_ATTEMPTS:
            log.error("quarantined %s: the node stopped %d times classifying it", name, began - 1)
            destination = self.state.quarantine
            film = Classified({"path": str(source), "error": quarantine_reason(began - 1)})
        else:
            try:
                film = self.classifier.classify_film(source)
            except OSError:
                raise  # the disk, not the film: tried again
            except Exception as err:  # a film no reader expected: its record says so, once
                log.exception("classifying %s failed", name)
                film = Classified(
                    {"path": str(source), "error": f"could not be classified ({err})"}
                )
        record = film.record
        record["path"] = str(destination / name)
        record.update(film_identity(source))
        record["received_at"] = datetime.datetime.fromtimestamp(
            received, datetime.timezone.utc
        ).isoformat(timespec="microseconds")
        explanation = None
        if film.resized is not None and any(sink.needs_map for sink in self.sinks):
            explanation = occlusion_map(self.classifier, film.resized)
        for sink in self.sinks:
            sink.add(film, explanation)
        record["classified_at"] = utc_now()
        self.state.results.append(record)
        self.state.finish(name, destination)
        log.info("%s: %s", name, record.get("label") or f"error: {record.get('error')}")
