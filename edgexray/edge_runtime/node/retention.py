"""How long the node keeps what names a patient: films, their HTML pages and their records.

With --keep-days, kept films (classified/, quarantine/), their pages (reports/) and their
lines in results.jsonl older than that are deleted; with --keep-mb, the oldest kept films
(with their pages and lines) are deleted until the films and pages take no more than that.
A film whose report or heatmap still waits in outbox/ is never deleted: the PACS must get
its results first. A film deleted here and sent again is classified again.

The worker prunes between films, at the start and every PRUNE_EVERY seconds, so
results.jsonl is rewritten (a new file renamed over it) while nothing appends to it.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .spool import REPORTS, NodeState

log = logging.getLogger("edgexray.node")

PRUNE_EVERY = 3600.0
DAY = 86400.0
MEGABYTE = 1024 * 1024


@dataclass(frozen=True)
class Retention:
    """The limits: days a film is kept, megabytes the kept films may take (None: no limit)."""

    days: float | None = None
    megabytes: float | None = None

    @property
    def active(self) -> bool:
        return self.days is not None or self.megabytes is not None


@dataclass(frozen=True)
class Kept:
    """One kept film and its page."""

    film: Path
    page: Path
    stored: float  # when it was stored (the file's modification time)
    size: int  # film and page, bytes

    @property
    def uid(self) -> str:
        return self.film.stem


def kept_films(state: NodeState) -> list[Kept]:
    """Every kept film with its page, oldest first."""
    found = []
    for folder in (state.classified, state.quarantine):
        for film in folder.glob("*.dcm"):
            try:
                stat = film.stat()
            except FileNotFoundError:
                continue
            page = state.folder / REPORTS / f"{film.stem}.html"
            size = stat.st_size + (page.stat().st_size if page.exists() else 0)
            found.append(Kept(film, page, stat.st_mtime, size))
    return sorted(found, key=lambda kept: (kept.stored, kept.film.name))


def prune(
    state: NodeState, retention: Retention, waiting: set[str], now: float | None = None
) -> dict:
    """Delete what is past the retention (module docstring); waiting holds the UIDs whose
    results are still in the outbox. Returns what was deleted: films, bytes, records."""
    now = time.time() if now is None else now
    cutoff = now - retention.days * DAY if retention.days is not None else None
    films = kept_films(state)
    doomed = [k for k in films if cutoff is not None and k.stored < cutoff]
    if retention.megabytes is not None:
        left = [k for k in films if k not in doomed]
        total = sum(k.size for k in left)
        for kept in left:  # oldest first
            if total <= retention.megabytes * MEGABYTE:
                break
            if kept.uid not in waiting:
                doomed.append(kept)
                total -= kept.size
    doomed = [k for k in doomed if k.uid not in waiting]
    for kept in doomed:
        kept.film.unlink(missing_ok=True)
        kept.page.unlink(missing_ok=True)
    gone = {k.uid for k in doomed}
    still = {k.uid for k in films} - gone

    def keep(record: dict) -> bool:
        uid = str(record.get("sop_instance_uid", ""))
        if uid in gone:
            return False
        if cutoff is None or uid in still or uid in waiting:
            return True
        return _time(record.get("received_at")) >= cutoff

    records = state.results.rewrite(keep) if (gone or cutoff is not None) else 0
    if doomed or records:
        log.info(
            "retention: deleted %d film(s) (%.1f MB) and %d record(s)",
            len(doomed),
            sum(k.size for k in doomed) / MEGABYTE,
            records,
        )
    return {"films": len(doomed), "bytes": sum(k.size for k in doomed), "records": records}


def _time(stamp) -> float:
    try:
        return datetime.datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return float("inf")  # no readable time: kept, never deleted by mistake
