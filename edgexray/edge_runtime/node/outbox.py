"""The outbox: Structured Reports waiting for the PACS, and the thread that sends them.

The worker hands each classified film to the outbox (`Outbox.add`) before it writes the
film's record: the record is queued in outbox/ durably (NAME.record.json). A sender thread
builds each report (sr.py), writes it to outbox/ (NAME.sr.dcm), delivers it by C-STORE and
deletes it once the PACS answered success; it backs off (doubling, up to retry_max) while
the PACS is down. outbox/ survives restarts, so nothing is lost while the PACS or the node
is away. A record no report could be built for waits in outbox/failed/ with the reason,
logged, and is tried again every FAILED_RETRY seconds and at each start: never dropped.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from .spool import durable_write, utc_now
from .sr import COMPREHENSIVE_SR, EXPLICIT_LITTLE, require_highdicom, structured_report

log = logging.getLogger("edgexray.node")

# C-STORE answers a PACS can give that mean "kept": success and the warnings (PS3.4 B.2.3).
STORED_STATUSES = {0x0000, 0xB000, 0xB006, 0xB007}
PENDING, READY = ".record.json", ".sr.dcm"  # outbox/: a record to report on, a report to send
FAILED = "failed"  # outbox/failed/: records no report could be built for yet, with why
# How often failed/ is tried again (and at each start): a report that could not be built
# mostly fails for a property of its film, so more often would only repeat the log line.
FAILED_RETRY = 3600.0


class Outbox:
    """outbox/: reports waiting for the PACS, and the thread that sends them; a sink of
    the node's worker."""

    needs_map = False

    def __init__(
        self,
        folder: Path,
        films: tuple[Path, ...],
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

    def add(self, film, explanation=None) -> None:
        """Queue the report of one classified film (its record names the film's file, in
        one of self.films) durably: its record now, the report itself built by the sender
        thread, so highdicom's time never holds up the next film.

        Raises:
            OSError: it could not be written (the worker tries again later).
        """
        name = Path(film.record["path"]).name
        path = self.folder / f"{Path(name).stem}{PENDING}"
        durable_write(path, [json.dumps({"film": name, "record": film.record}).encode()])
        self._wake.set()

    def close(self) -> None:
        pass

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
