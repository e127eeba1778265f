"""The DICOM node's state folder: the durable queue of films and the result log.

    STATE/incoming/      films stored (C-STORE answered), not yet classified: the queue
    STATE/classified/    films whose record is written
    STATE/quarantine/    films the node died on twice while classifying (their record says so)
    STATE/attempts/      one small file per film being classified: how many times it began
    STATE/results.jsonl  one record per film, each line written whole and fsynced
    STATE/outbox/        reports and heatmaps waiting for the PACS (outbox.py)
    STATE/reports/       per-film HTML reports (with --reports)

Everything in it names a patient: the folders are the node's user's alone (0700) and the
files 0600, whatever the umask; retention.py deletes kept films, pages and records after
--keep-days or beyond --keep-mb.

Every write that a promise rests on is durable before the promise is made: a film is
fsynced and renamed into incoming/ (and the folder fsynced) before its C-STORE is answered;
its record is fsynced before the film is moved out of incoming/. So after a crash or a
power cut every stored film has exactly one record, or none yet and waits in incoming/
(see `NodeState.recover`).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import threading
from pathlib import Path

from ..errors import InferenceError
from ..outputs.files import PRIVATE
from .config import MEGABYTE

log = logging.getLogger("edgexray.node")

INCOMING, CLASSIFIED, OUTBOX, REPORTS = "incoming", "classified", "outbox", "reports"
QUARANTINE, ATTEMPTS = "quarantine", "attempts"
RESULTS = "results.jsonl"
# A film on which classification began this many times without finishing took the node
# down each time (out of memory in a decoder, a crash in native code): the next start
# quarantines it instead of dying on it again, as the watch folder does.
MAX_ATTEMPTS = 2

TEMPORARY_PREFIX = ".part-"
PRIVATE_FOLDER = 0o700


def private_folder(path: Path) -> Path:
    """Make path a folder only the node's user can list or enter (its files name patients),
    whatever the umask or the mode an older version gave it."""
    path.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    os.chmod(path, PRIVATE_FOLDER)
    return path


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in folder survive a power cut."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_synced(path: Path, chunks) -> None:
    """Write chunks to a new file at path, readable by the node's user alone (films and
    reports hold patient data, whatever the umask), and fsync it (the caller renames it
    into place)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    with open(descriptor, "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
        os.fsync(handle.fileno())


def durable_write(path: Path, chunks) -> None:
    """Write chunks to a temporary file next to path, fsync it, rename it over path and
    fsync the folder: path is then whole on disk, or absent."""
    temporary = path.with_name(f"{TEMPORARY_PREFIX}{path.name}.{threading.get_ident()}")
    try:
        _write_synced(temporary, chunks)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")


class ResultLog:
    """results.jsonl, appended one whole line at a time.

    A line is written with one O_APPEND write and fsynced; if the write fails half way
    (a full disk), the file is cut back to where it was. A line left half written by a
    power cut is cut off at the next start, and its film classified again.
    """

    def __init__(self, path: Path):
        self.path = path
        self._repair()
        self._descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE)

    def _repair(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            handle.seek(max(0, size - MEGABYTE))
            tail = handle.read()
            keep = size - len(tail) + tail.rfind(b"\n") + 1
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
        log.warning("%s: removed a half-written last line (%d bytes)", self.path, size - keep)

    def last(self) -> dict | None:
        """The last record, or None when there is none."""
        if not self.path.exists():
            return None
        with open(self.path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - MEGABYTE))
            lines = handle.read().splitlines()
        try:
            return json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            return None

    def append(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode()
        start = os.lseek(self._descriptor, 0, os.SEEK_END)
        try:
            written = 0
            while written < len(line):
                written += os.write(self._descriptor, line[written:])
            os.fsync(self._descriptor)
        except OSError:
            try:
                os.ftruncate(self._descriptor, start)
            except OSError:
                pass  # _repair cuts the half line at the next start
            raise

    def rewrite(self, keep) -> int:
        """Keep only the records for which keep(record) is true (retention.py): the kept
        lines go to a new file, fsynced and renamed over this one. The caller makes sure
        nothing appends meanwhile (the worker prunes between films). Returns how many
        records were removed."""
        lines = self.path.read_bytes().splitlines(keepends=True) if self.path.exists() else []
        kept = []
        for line in lines:
            try:
                wanted = keep(json.loads(line))
            except ValueError:
                wanted = True  # not a record: a person should see it
            if wanted:
                kept.append(line)
        if len(kept) == len(lines):
            return 0
        durable_write(self.path, kept)
        os.close(self._descriptor)
        self._descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND, PRIVATE)
        return len(lines) - len(kept)

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


class NodeState:
    """The state folder: incoming/ (stored, not yet classified), classified/, results."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).resolve()  # records name films by absolute paths
        if self.folder.exists() and not self.folder.is_dir():
            raise InferenceError(f"--state {folder}: a file, not a folder")
        self.incoming = self.folder / INCOMING
        self.classified = self.folder / CLASSIFIED
        self.quarantine = self.folder / QUARANTINE
        self.attempts = self.folder / ATTEMPTS
        self.folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
        for path in (self.incoming, self.classified, self.quarantine, self.attempts):
            private_folder(path)
        self.results = ResultLog(self.folder / RESULTS)
        self._store_lock = threading.Lock()

    def film_name(self, sop_instance_uid: str) -> str:
        return f"{sop_instance_uid}.dcm"

    def known(self, name: str) -> bool:
        """True when this film was already stored (classified or waiting)."""
        return (self.incoming / name).exists() or (self.classified / name).exists()

    def store(self, name: str, chunks) -> bool:
        """Write one film to incoming/ durably; False when it was already there.

        The lock makes "is it new" and the rename one step, so a film sent on two
        associations at once is stored once.
        """
        if self.known(name):
            return False
        temporary = self.incoming / f"{TEMPORARY_PREFIX}{name}.{threading.get_ident()}"
        try:
            _write_synced(temporary, chunks)
            with self._store_lock:
                if self.known(name):
                    temporary.unlink()
                    return False
                os.replace(temporary, self.incoming / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_folder(self.incoming)
        return True

    def begin(self, name: str) -> int:
        """Count one more attempt at classifying film name, before it starts; return how
        many began, this one included.

        Not fsynced: the count must outlive the process (killed when a decoder runs out of
        memory), which the page cache does; a power cut that forgets an attempt only buys
        the film one more try.
        """
        counter = self.attempts / name
        try:
            began = int(counter.read_text() or 0)
        except (FileNotFoundError, ValueError):
            began = 0
        counter.write_text(str(began + 1))
        return began + 1

    def finish(self, name: str, folder: Path | None = None) -> Path:
        """Move a recorded film out of the queue, into classified/ (or folder)."""
        target = (folder or self.classified) / name
        os.chmod(self.incoming / name, PRIVATE)  # one put there by hand, or by an older node
        os.replace(self.incoming / name, target)
        (self.attempts / name).unlink(missing_ok=True)
        fsync_folder(self.incoming)
        fsync_folder(target.parent)
        return target

    def recover(self) -> list[str]:
        """Tidy after a stop or a crash and return the films still to classify, oldest first.

        Half-written temporaries are removed (their C-STORE was never answered with
        success). The worker writes the record before it moves the film, so a crash
        between the two leaves a film in incoming/ whose record is already the last
        line: that film is moved, not classified twice.
        """
        for temporary in self.incoming.glob(f"{TEMPORARY_PREFIX}*"):
            temporary.unlink(missing_ok=True)
        last = self.results.last()
        if last is not None:
            name = self.film_name(str(last.get("sop_instance_uid", "")))
            if (self.incoming / name).exists():
                quarantined = Path(str(last.get("path", ""))).parent.name == QUARANTINE
                self.finish(name, self.quarantine if quarantined else None)
        for counter in self.attempts.iterdir():  # films recorded since, or never stored
            if not (self.incoming / counter.name).exists():
                counter.unlink(missing_ok=True)
        waiting = [p for p in self.incoming.iterdir() if p.suffix == ".dcm" and p.is_file()]
        return [p.name for p in sorted(waiting, key=lambda p: (p.stat().st_mtime_ns, p.name))]
