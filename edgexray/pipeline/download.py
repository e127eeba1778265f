"""`edgexray data download`: the public chest X-ray set, fetched and laid out as Kaggle's.

One table, SOURCES, says where the data comes from. A download goes to DIR/.download/
NAME.part and resumes from there after a cut (an HTTP Range request guarded by If-Range,
so a file that changed on the server restarts from zero instead of being spliced). Only
http and https are fetched. The size the server announces must fit the free disk, archive
and extraction together, before a byte is written; a disk that fills anyway is reported as
full, never as a cut, and the .part is removed to give the space back. FetchLimits bound
the whole download in time and rate, so a trickling server cannot hold it forever (the
.part stays, to resume). The finished archive is checked against a sha256, extracted into
a temporary folder next to the destination and renamed to DIR/chest_xray only when
complete, so a failure at any point leaves no half-extracted folder behind.

Checksums: neither host publishes a sha256 of its archive and no machine here can reach
them, so the table holds None instead of an invented value. A digest is then trusted on
first use: the first download that extracts records its sha256 in DIR/.download/NAME.sha256,
and a later download of the same archive into DIR must match it (as must a digest given
with --sha256, or one put in the table later). A response that is not the data set (a
login page, an empty or cut-short file, a zip bomb) is removed and never recorded, so the
next run fetches again instead of refusing the real archive. Without any digest the size
the server announced is still checked, and the extracted folder must hold both classes in
train/ and test/.

The standard library only (urllib, zipfile): no TensorFlow, nothing to install.
"""

from __future__ import annotations

import errno
import http.client
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edgexray import artifacts
from edgexray.edge_runtime.options import option
from edgexray.edge_runtime.readers import SUFFIXES as IMAGE_SUFFIXES
from edgexray.errors import EdgexrayError, check_config
from edgexray.pipeline.data import LABELS, SPLITS

log = logging.getLogger("edgexray")

FOLDER = "chest_xray"  # the extracted data: DIR/chest_xray/{train,test}/{NORMAL,PNEUMONIA}
DEFAULT_OUT = Path("data")  # so the data lands in ./data/chest_xray, where `run` looks
DOWNLOADS = ".download"  # archives and .part files, inside DIR
SKIPPED_PARTS = ("__MACOSX",)  # macOS resource forks in both public archives

# Zip-bomb limits. The Mendeley archive is about 1.2 GB of JPEGs that barely compress:
# 8 GB unpacked, a ratio of 50 per file or 100 000 entries is not this data set.
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_RATIO = 50
MAX_MEMBERS = 100_000
# An archive bigger than what may unpack from it is not this data set (about 1.2 GB):
# refused from its Content-Length, before it fills a disk.
MAX_ARCHIVE_BYTES = MAX_UNPACKED_BYTES

SCHEMES = ("http", "https")  # urllib would also open ftp:// and file://
# A write that fails for want of room (EDQUOT: a quota; Windows has none).
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
RATE_WINDOW_SECONDS = 60.0
BLOCK = 1 << 16
PROGRESS_SECONDS = 2.0
NAME_MAX = 255  # bytes in a file name where the file system does not say (Windows)

# What a file that is not a zip archive usually is, by how it starts (lower case, leading
# blanks dropped): a captive portal's or a host's page served instead of the file, or a
# transfer that stopped before the zip's directory, which sits at its end.
LOGIN_PAGE = (
    "an HTML page, not a zip archive: is a login needed? (then download it in a "
    "browser and pass it with --archive)"
)
NOT_A_ZIP = (
    (b"<!doctype html", LOGIN_PAGE),
    (b"<html", LOGIN_PAGE),
    (b"<?xml", "an XML document, not a zip archive (an error message?)"),
    (b"{", "a JSON document, not a zip archive (an error message?)"),
    (b"pk\x03\x04", "the start of a zip archive without its end: the transfer stopped early"),
)


@dataclass(frozen=True)
class Source:
    """Where one public copy of the data set lives."""

    fetch: str  # "http" (resumable download of `url`) or "kagglehub"
    url: str  # a direct download URL, or the Kaggle dataset handle
    filename: str  # the archive's name in DIR/.download
    sha256: str | None  # None: not published by the host and unknown to us (see above)
    size: str  # as reported by others, for the README; never checked
    page: str  # the human-readable page, for errors and docs


# The one table of sources. Kermany, Zhang, Goldbaum (2018), CC BY 4.0.
SOURCES = {
    "mendeley": Source(
        fetch="http",
        # ChestXRay2017.zip of Mendeley Data doi:10.17632/rscbjbr9sj.2, no account needed.
        url="https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
        "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded",
        filename="ChestXRay2017.zip",
        sha256=None,
        size="about 1.2 GB (reported by others, not measured here)",
        page="https://data.mendeley.com/datasets/rscbjbr9sj/2",
    ),
    "kaggle": Source(
        fetch="kagglehub",
        url="paultimothymooney/chest-xray-pneumonia",  # needs a Kaggle account and API token
        filename="",
        sha256=None,
        size="about 2.3 GB (reported by others, not measured here; it holds the set twice)",
        page="https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia",
    ),
}


class DownloadError(EdgexrayError):
    """The data could not be fetched, verified or extracted (exit 2)."""


class ArchiveError(DownloadError):
    """The archive is not the data set (not a zip, cut short, a zip bomb, the wrong
    folders): a downloaded one is removed and its sha256 never recorded."""


@dataclass(frozen=True)
class FetchLimits:
    """How long a download may take. Past the deadline or under the minimum rate it
    stops with the .part kept, so the same command resumes it later.

    Attributes:
        deadline: minutes for the whole download, reconnects included.
        min_rate: kB/s; fewer arriving over rate_window seconds stop the download (0: no
            minimum): a server sending a byte now and then never trips the timeout.
        rate_window: seconds over which the rate is measured.
        timeout: seconds a connection may stay silent before it counts as cut.
        retries: reconnects after a cut, each resuming where the last one stopped.
        backoff: seconds before the first reconnect, more before each later one.
    """

    deadline: float = option(
        24 * 60.0,
        "Stop the download after this many minutes (the same command resumes it).",
        metavar="MINUTES",
    )
    min_rate: float = option(
        10.0,
        f"Stop the download when under this many kB/s arrive over {RATE_WINDOW_SECONDS:.0f} s "
        "(0: no minimum; the same command resumes it).",
        metavar="KB/S",
    )
    rate_window: float = RATE_WINDOW_SECONDS
    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0

    def __post_init__(self):
        def positive(value) -> bool:
            return math.isfinite(value) and value > 0

        check_config(
            "download limits",
            {
                "deadline must be a positive number of minutes": positive(self.deadline),
                "min_rate must be a number of kB/s, 0 or more": math.isfinite(self.min_rate)
                and self.min_rate >= 0,
                "rate_window must be a positive number of seconds": positive(self.rate_window),
                "timeout must be a positive number of seconds": positive(self.timeout),
                "retries must be 0 or more": self.retries >= 0,
                "backoff must be 0 or more seconds": math.isfinite(self.backoff)
                and self.backoff >= 0,
            },
        )


@dataclass(frozen=True)
class Result:
    folder: Path  # DIR/chest_xray
    counts: dict[str, dict[str, int]]  # images per split and label
    sha256: str | None  # of the archive, when there was one
    downloaded: bool  # False when the folder was already there


# --- progress -------------------------------------------------------------------------


def progress_printer(label: str, stream=None) -> Callable[[int, int | None], None]:
    """A callback(done, total) printing progress on stderr: one updating line on a
    terminal, else a line at most every PROGRESS_SECONDS (and at the end)."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    last = [0.0]
    started = time.monotonic()

    def show(done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - last[0] < (0.2 if tty else PROGRESS_SECONDS):
            return
        last[0] = now
        rate = done / max(now - started, 1e-6) / 1e6
        if total:
            width = 30
            filled = int(width * done / total)
            text = (
                f"{label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{done / 1e6:.1f}/{total / 1e6:.1f} MB {100 * done / total:3.0f}% {rate:.1f} MB/s"
            )
        else:
            text = f"{label} {done / 1e6:.1f} MB {rate:.1f} MB/s"
        stream.write(("\r" + text + ("\n" if finished else "")) if tty else text + "\n")
        stream.flush()

    return show


# --- resumable HTTP download ----------------------------------------------------------


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https only (urllib's own also follows ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme.lower() not in SCHEMES:
            fp.close()
            raise DownloadError(
                f"{_host(req.full_url)} redirects to {newurl}: only http and https are fetched"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpOnlyRedirects)


def _require_http(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme.lower() not in SCHEMES:
        raise DownloadError(f"--url must be an http:// or https:// address, got {url!r}")


def _state_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _read_state(part: Path) -> dict:
    try:
        state = json.loads(_state_path(part).read_text())
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}


def _discard(part: Path) -> None:
    """Remove a .part and what is known about it: the next run starts from zero."""
    part.unlink(missing_ok=True)
    _state_path(part).unlink(missing_ok=True)


def _open(url: str, offset: int, validator: str | None, timeout: float):
    headers = {"User-Agent": "edgexray-data-download"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if validator:
            # The server sends the rest only if the file is still the one we started on,
            # else the whole (new) file with 200.
            headers["If-Range"] = validator
    return _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _megabytes(done: int, total: int | None) -> str:
    return f"{done / 1e6:.1f}" + (f" of {total / 1e6:.1f} MB" if total else " MB")


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


class _Pace:
    """The FetchLimits clock of one download: the deadline spans every reconnect, the
    rate is measured over windows of rate_window seconds within one connection."""

    def __init__(self, limits: FetchLimits, host: str):
        self.limits = limits
        self.host = host
        self.stop_at = time.monotonic() + 60 * limits.deadline
        self.restart(0)

    def left(self) -> float:
        """Seconds until the deadline."""
        return self.stop_at - time.monotonic()

    def restart(self, done: int) -> None:
        """A new connection, which holds `done` bytes so far: its rate counts from now."""
        self.window_start, self.window_done = time.monotonic(), done

    def check_deadline(self, done: int, total: int | None) -> None:
        if self.left() <= 0:
            raise DownloadError(
                f"download from {self.host} stopped at {_megabytes(done, total)}: past "
                f"its --deadline of {self.limits.deadline:g} minutes; run the same command "
                "again to resume"
            )

    def check(self, done: int, total: int | None) -> None:
        """Raise DownloadError when past the deadline or under the minimum rate."""
        self.check_deadline(done, total)
        limits, now = self.limits, time.monotonic()
        elapsed = now - self.window_start
        if elapsed < limits.rate_window:
            return
        rate = (done - self.window_done) / elapsed / 1e3
        if rate < limits.min_rate:
            raise DownloadError(
                f"download from {self.host} stopped at {_megabytes(done, total)}: "
                f"{rate:.2f} kB/s over the last {elapsed:.0f} s, under its --min-rate of "
                f"{limits.min_rate:g} kB/s; run the same command again to resume"
            )
        self.restart(done)


def _check_room(part: Path, offset: int, total: int) -> None:
    """Refuse an announced size that is not this data set or does not fit the disk."""
    if total > MAX_ARCHIVE_BYTES:
        _discard(part)
        raise DownloadError(
            f"the server announces a {_size(total)} archive, more than the "
            f"{_size(MAX_ARCHIVE_BYTES)} this data set may unpack to: refused"
        )
    # The films are JPEGs, which barely compress: extracting needs about the archive's
    # size again, while the archive is still there.
    needed = (total - offset) + total
    free = shutil.disk_usage(part.parent).free
    if needed > free:
        raise DownloadError(
            f"the archive is {_size(total)}: downloading and extracting it needs about "
            f"{_size(needed)}, but {part.parent.parent} has {_size(free)} free; make room "
            "or choose another --out"
        )


def _write_failed(err: OSError, part: Path, done: int, total: int | None) -> DownloadError:
    """A local write failed: a full disk, never a network cut."""
    if err.errno in DISK_FULL:
        _discard(part)  # a .part that filled the disk would keep it full
        return DownloadError(
            f"{os.strerror(err.errno).lower()} for {part} at {_megabytes(done, total)}: "
            "the partial download was removed to free the disk; make room for the archive "
            "and as much again to extract it, then run the same command again"
        )
    return DownloadError(f"cannot write {part} ({err.strerror or err})")


def _append(handle, block: bytes) -> None:
    """Write all of block to an unbuffered file (one raw write may take only part)."""
    view = memoryview(block)
    while view:
        view = view[handle.write(view) :]


def _transfer(url, part: Path, pace: _Pace, on_progress) -> bool:
    """One connection: append to `part` what the server sends. True when complete."""
    state = _read_state(part)
    offset = part.stat().st_size if part.exists() and state.get("url") == url else 0
    validator = state.get("etag") or state.get("last_modified")
    pace.check_deadline(offset, state.get("total"))
    try:
        response = _open(url, offset, validator, min(pace.limits.timeout, pace.left()))
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset and offset == state.get("total"):
            return True  # everything was already there
        if err.code == 416:  # a .part the server cannot continue: start again
            part.unlink(missing_ok=True)
            return False
        raise DownloadError(f"{_host(url)} answered HTTP {err.code} ({err.reason})") from None
    with response:
        resumed = offset and response.status == 206
        if resumed:
            start = (response.headers.get("Content-Range") or "").removeprefix("bytes ")
            if not start.startswith(f"{offset}-"):
                _discard(part)  # else every rerun asks for the same range again
                raise DownloadError(
                    f"{_host(url)} resumed at the wrong place ({start!r}, asked for byte "
                    f"{offset} on): the partial download was removed; run the same command "
                    "again to start over"
                )
        else:
            offset = 0  # a 200: the whole file (new, or the server cannot resume)
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if total is not None:
            _check_room(part, offset, total)
        pace.restart(offset)
        state = {
            "url": url,
            "total": total,
            "etag": response.headers.get("ETag"),
            "last_modified": response.headers.get("Last-Modified"),
        }
        done = offset
        try:
            _state_path(part).write_text(json.dumps(state))
            # Unbuffered, so a full disk shows at the write that hit it, not at close().
            handle = open(part, "ab" if resumed else "wb", buffering=0)
        except OSError as err:
            raise _write_failed(err, part, done, total) from None
        with handle:
            # read1: whatever arrived, so a trickle still comes back to the pace's clock.
            while block := response.read1(BLOCK):
                try:
                    _append(handle, block)
                except OSError as err:
                    raise _write_failed(err, part, done, total) from None
                done += len(block)
                on_progress(done, total)
                pace.check(done, total)
    if total is not None and done != total:
        raise ConnectionError(f"connection closed at {done} of {total} bytes")
    return True


def fetch(
    url: str,
    destination: Path,
    *,
    limits: FetchLimits | None = None,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download an http(s) `url` to `destination` through `destination`.part, resuming a cut.

    Raises:
        DownloadError: not http(s), the host cannot be reached or refuses, the connection
            keeps dropping or the download outlasts `limits` (the .part stays: the same
            call later resumes it); the size does not fit the disk.
    """
    _require_http(url)
    limits = limits or FetchLimits()
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    on_progress = on_progress or (lambda done, total: None)
    pace = _Pace(limits, _host(url))
    for attempt in range(limits.retries + 1):
        try:
            if _transfer(url, part, pace, on_progress):
                break
        except urllib.error.URLError as err:
            reason = getattr(err.reason, "strerror", None) or str(err.reason)
            raise DownloadError(
                f"cannot reach {_host(url)} ({reason}): check the network, or download the "
                "archive by hand and pass it with --archive"
            ) from None
        except (OSError, http.client.HTTPException) as err:  # a cut, a reset, a timeout
            have = part.stat().st_size if part.exists() else 0
            if attempt == limits.retries:
                raise DownloadError(
                    f"download from {_host(url)} cut at {have / 1e6:.1f} MB ({err}): run the "
                    "same command again to resume"
                ) from None
            log.warning("connection cut at %.1f MB (%s): resuming", have / 1e6, err)
            time.sleep(max(0.0, min(limits.backoff * (attempt + 1), pace.left())))
    else:  # every attempt ended in a restart from zero (HTTP 416)
        raise DownloadError(f"{_host(url)} kept refusing the download's byte ranges")
    os.replace(part, destination)
    _state_path(part).unlink(missing_ok=True)
    return destination


def _recorded(record: Path) -> str | None:
    """The sha256 recorded by the first download that extracted, if any."""
    words = record.read_text().split() if record.is_file() else []
    return words[0] if words else None


def verify(archive: Path, expected: str | None, record: Path) -> str:
    """The archive's sha256, checked against `expected`, else against the digest recorded
    by the first download into this folder that extracted (trust on first use). Nothing
    is recorded here: download() records a digest only once its archive extracted.

    Raises:
        DownloadError: a mismatch; the archive is removed so that a rerun fetches it anew.
    """
    actual = artifacts.sha256(archive)
    source = "the expected sha256"
    if expected is None and _recorded(record) is not None:
        expected = _recorded(record)
        source = f"the sha256 recorded by the first download ({record})"
    if expected is not None and actual != expected.lower():
        archive.unlink(missing_ok=True)
        raise DownloadError(
            f"{archive.name}: sha256 {actual} does not match {source} {expected}; "
            "the download was removed and nothing was extracted"
        )
    return actual


def received(path: Path) -> str | None:
    """What a file that is not a zip archive holds, in words; None for a zip archive."""
    if zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "an empty file"
    start = head.lstrip().lower()
    for prefix, words in NOT_A_ZIP:
        if start.startswith(prefix):
            return words
    return f"no zip archive (it starts with {head[:16]!r})"


# --- extraction -----------------------------------------------------------------------


def target_of(name: str) -> PurePosixPath | None:
    """Where an archive member goes in the Kaggle layout, or None to skip it.

    Both public archives hold .../{train,test[,val]}/{NORMAL,PNEUMONIA}/file.jpeg under
    some prefix (Mendeley: chest_xray/; Kaggle: chest_xray/ and again chest_xray/
    chest_xray/), plus __MACOSX/ and .DS_Store. Only the last three parts are kept, so
    no member can choose where it is written (no zip slip by construction).
    """
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if len(parts) < 3 or any(p in SKIPPED_PARTS for p in parts):
        return None
    split, label, filename = parts[-3], parts[-2], parts[-1]
    # The name half of readers.is_film_file: archive members cannot be stat()ed.
    if filename.startswith(".") or not filename.lower().endswith(IMAGE_SUFFIXES):
        return None
    if split.lower() not in SPLITS or label.upper() not in LABELS:
        return None
    if filename in ("..", ".") or "/" in filename or "\0" in filename:
        return None
    return PurePosixPath(split.lower(), label.upper(), filename)


def _plan(names: list[str]) -> dict[str, PurePosixPath]:
    """member -> target; the shallowest copy wins when Kaggle ships a file twice."""
    plan, taken = {}, set()
    for name in sorted(names, key=lambda n: (n.count("/"), n)):
        target = target_of(name)
        if target is not None and target not in taken:
            plan[name] = target
            taken.add(target)
    return plan


def _check_bomb(archive: zipfile.ZipFile, plan: dict) -> int:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise ArchiveError(f"archive has {len(infos)} entries (over {MAX_MEMBERS}): refused")
    total = 0
    for info in (archive.getinfo(name) for name in plan):
        if info.file_size > MAX_RATIO * max(info.compress_size, 1) + BLOCK:
            raise ArchiveError(
                f"{info.filename} unpacks {info.file_size / max(info.compress_size, 1):.0f} "
                "times its size: refused as a possible zip bomb"
            )
        total += info.file_size
    if total > MAX_UNPACKED_BYTES:
        raise ArchiveError(f"archive unpacks to {total / 1e9:.1f} GB: refused as a zip bomb")
    return total


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, the file system of `folder` takes."""
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or not said
        return NAME_MAX
    return limit if limit > 0 else NAME_MAX


def _check_names(plan: dict[str, PurePosixPath], out: Path, origin: str) -> None:
    """Refuse, before writing anything, a film whose name this file system cannot hold:
    a film that cannot be written is an error, never skipped."""
    limit = _name_max(out)
    for name, target in plan.items():
        size = len(os.fsencode(target.name))
        if size > limit:
            shown = name if len(name) <= 80 else f"{name[:50]}...{name[-20:]}"
            raise ArchiveError(
                f"{origin}: the film {shown} has a {size}-byte name, longer than the {limit} "
                f"bytes the file system of {out} takes: refused, nothing was extracted"
            )


def _copy_limited(source, target: Path, limit: int) -> None:
    """Copy at most `limit` bytes: the size a zip header declares is not trusted."""
    written = 0
    with open(target, "wb") as handle:
        for block in iter(lambda: source.read(BLOCK), b""):
            written += len(block)
            if written > limit:
                raise ArchiveError(f"{target.name} unpacks beyond its declared size: refused")
            handle.write(block)


def _counts(folder: Path) -> dict[str, dict[str, int]]:
    counts = {}
    for split in SPLITS:
        for label in LABELS:
            if (folder / split / label).is_dir():
                counts.setdefault(split, {})[label] = sum(
                    1 for p in (folder / split / label).iterdir() if p.is_file()
                )
    return counts


def _check_layout(counts: dict, origin: str) -> None:
    missing = [
        f"{split}/{label}"
        for split in ("train", "test")
        for label in LABELS
        if not counts.get(split, {}).get(label)
    ]
    if missing:
        raise ArchiveError(
            f"{origin} holds no images for {', '.join(missing)}: not the chest X-ray "
            "pneumonia set; nothing was extracted"
        )


def _install(fill: Callable[[Path], None], out: Path, origin: str) -> tuple[Path, dict]:
    """Fill a temporary folder next to DIR/chest_xray, check it, then rename it there."""
    final = out / FOLDER
    temporary = Path(tempfile.mkdtemp(prefix=f".{FOLDER}.", suffix=".partial", dir=out))
    try:
        fill(temporary)
        counts = _counts(temporary)
        _check_layout(counts, origin)
        os.replace(temporary, final)  # fails, rather than merges, if final appeared meanwhile
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return final, counts


def extract(archive: Path, out: Path) -> tuple[Path, dict]:
    """Extract the images of a zip into out/chest_xray in the Kaggle layout.

    Raises:
        ArchiveError: not a zip (the error says what it is instead), a zip bomb, a
            film name too long for this file system, the wrong data.
        DownloadError: a disk too small, a film that cannot be written. Either way
            nothing is left behind.
    """
    try:
        handle = zipfile.ZipFile(archive)
    except OSError as err:
        raise DownloadError(f"cannot read {archive} ({err.strerror or err})") from None
    except zipfile.BadZipFile as err:
        what = received(archive) or f"a damaged zip archive ({err})"
        raise ArchiveError(f"{archive}: {what}") from None
    with handle:
        plan = _plan(handle.namelist())
        needed = _check_bomb(handle, plan)
        _check_names(plan, out, archive.name)
        free = shutil.disk_usage(out).free
        if needed > free:
            raise DownloadError(
                f"extracting needs {needed / 1e9:.2f} GB but {out} has {free / 1e9:.2f} GB free"
            )

        def fill(temporary: Path) -> None:
            for done, (name, target) in enumerate(plan.items(), 1):
                path = temporary / target
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with handle.open(name) as source:
                        _copy_limited(source, path, handle.getinfo(name).file_size)
                except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
                    raise ArchiveError(f"{archive.name}: {name} is corrupt ({err})") from None
                except OSError as err:
                    raise DownloadError(
                        f"cannot write the film {name} ({err.strerror or err}): nothing "
                        "was extracted"
                    ) from None
                if done % 1000 == 0:
                    log.info("extracted %d/%d images", done, len(plan))

        return _install(fill, out, archive.name)


def copy_tree(folder: Path, out: Path) -> tuple[Path, dict]:
    """Lay out an already-extracted copy (kagglehub's) as out/chest_xray."""
    names = [
        p.relative_to(folder).as_posix()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and not p.is_symlink()
    ]
    plan = _plan(names)

    def fill(temporary: Path) -> None:
        for name, target in plan.items():
            (temporary / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(folder) / name, temporary / target)

    return _install(fill, out, str(folder))


# --- the command ----------------------------------------------------------------------


def _kagglehub_folder(source: Source) -> Path:
    try:
        import kagglehub
    except ImportError:
        raise DownloadError(
            'the kaggle source needs kagglehub: pip install "edgexray[kaggle]" '
            "(or use --source mendeley, which needs no account)"
        ) from None
    try:
        return Path(kagglehub.dataset_download(source.url))
    except Exception as err:  # noqa: BLE001 - kagglehub raises many types (auth, network)
        raise DownloadError(f"kagglehub could not fetch {source.url}: {err}") from None


def download(
    out: Path = DEFAULT_OUT,
    source: str = "mendeley",
    *,
    url: str | None = None,
    sha256: str | None = None,
    archive: Path | None = None,
    keep_archive: bool = False,
    on_progress: Callable[[int, int | None], None] | None = None,
    limits: FetchLimits | None = None,
) -> Result:
    """Fetch, verify and extract the data set into out/chest_xray.

    Args:
        url: another http(s) mirror of the source's archive (verified the same way).
        sha256: the archive's expected digest (wins over the table and the record).
        archive: an archive already on disk (downloaded by hand): verified, extracted,
            never removed.
        keep_archive: keep the downloaded archive in out/.download after extracting.
        limits: how long the download may take (FetchLimits' defaults when None).

    Raises:
        DownloadError: unknown source, not http(s), offline, too slow, no room, bad
            checksum, bad or hostile archive, out/chest_xray a file.
    """
    if source not in SOURCES:
        raise DownloadError(f"unknown source {source!r}: choose from {sorted(SOURCES)}")
    chosen = SOURCES[source]
    out = Path(out)
    final = out / FOLDER
    if final.is_dir():
        return Result(final, _counts(final), None, downloaded=False)
    if os.path.lexists(final):
        raise DownloadError(f"{final} is in the way: the data goes there, and it is not a folder")
    if sha256 is not None and (len(sha256) != 64 or set(sha256.lower()) - set("0123456789abcdef")):
        raise DownloadError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    if url is not None:
        _require_http(url)
    out.mkdir(parents=True, exist_ok=True)
    expected = sha256 or chosen.sha256

    if archive is not None:
        archive = Path(archive)
        if not archive.is_file():
            raise DownloadError(f"archive not found: {archive}")
        digest = artifacts.sha256(archive)
        if expected and digest != expected.lower():
            raise DownloadError(f"{archive}: sha256 {digest} does not match {expected}")
        folder, counts = extract(archive, out)
        return Result(folder, counts, digest, downloaded=True)

    if chosen.fetch == "kagglehub" and url is None:
        folder, counts = copy_tree(_kagglehub_folder(chosen), out)
        return Result(folder, counts, None, downloaded=True)

    link = url or chosen.url
    filename = chosen.filename or "archive.zip"
    target = out / DOWNLOADS / filename
    record = target.with_name(filename + ".sha256")
    if not target.is_file():
        fetch(link, target, limits=limits, on_progress=on_progress)
    try:
        what = received(target)  # first: a login page is named as such, not as a mismatch
        if what is not None:
            raise ArchiveError(f"{_host(link)} sent {what}")
        digest = verify(target, expected, record)
        folder, counts = extract(target, out)
    except ArchiveError as err:
        # Not the data set: fetched again next time, and never trusted. A record of this
        # very file was pinned by an older edgexray, before it waited for extraction.
        if _recorded(record) == artifacts.sha256(target):
            record.unlink()
        target.unlink()
        raise ArchiveError(
            f"{err}; the download was removed, nothing was extracted and no sha256 recorded"
        ) from None
    if _recorded(record) is None:
        artifacts.atomic_write(record, lambda path: path.write_text(f"{digest}  {filename}\n"))
    if not keep_archive:
        target.unlink()
    return Result(folder, counts, digest, downloaded=True)
