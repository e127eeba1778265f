"""`edgexray data download` end to end against a small archive on a loopback HTTP server."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import socket
import sys
import threading
import time
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.pipeline import download
from edgexray.run import find_data

FILMS = {  # member name in a Mendeley-like archive -> where it must land
    "chest_xray/train/NORMAL/IM-0001-0001.jpeg": "train/NORMAL/IM-0001-0001.jpeg",
    "chest_xray/train/NORMAL/IM-0002-0001.jpeg": "train/NORMAL/IM-0002-0001.jpeg",
    "chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg": "train/PNEUMONIA/person1_bacteria_1.jpeg",
    "chest_xray/train/PNEUMONIA/person2_virus_3.jpeg": "train/PNEUMONIA/person2_virus_3.jpeg",
    "chest_xray/test/NORMAL/IM-0100-0001.jpeg": "test/NORMAL/IM-0100-0001.jpeg",
    "chest_xray/test/PNEUMONIA/person90_bacteria_4.jpeg": "test/PNEUMONIA/person90_bacteria_4.jpeg",
}
JUNK = (
    "__MACOSX/chest_xray/train/NORMAL/._IM-0001-0001.jpeg",
    "chest_xray/.DS_Store",
    "chest_xray/train/NORMAL/.DS_Store",
)


def film_bytes(seed: int) -> bytes:
    """A noisy 96 px JPEG: about 10 kB that does not compress, so a cut lands mid-file."""
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def mendeley_zip(seed: int = 0) -> tuple[bytes, dict[str, bytes]]:
    films = {name: film_bytes(seed + i) for i, name in enumerate(FILMS)}
    return make_zip({**films, **{name: b"junk" for name in JUNK}}), films


QUICK = download.FetchLimits(retries=0, backoff=0)  # fail at the first cut, no waiting


def answer(handler, status: int, body: bytes = b"", **headers) -> None:
    """Send one whole response from a request handler (headers: Content_Type=...)."""
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), str(value))
    handler.end_headers()
    handler.wfile.write(body)


class Server:
    """A loopback HTTP server for one payload, with Range/If-Range like a real host.

    cut_at: the first GET sends only this many bytes of its body, then closes.
    range_shift: a 206 starts this many bytes later than asked (and says so).
    respond: when set, answers every GET instead (called with the request handler).
    """

    def __init__(self):
        self.payload = b""
        self.etag = '"v1"'
        self.cut_at: int | None = None
        self.range_shift = 0
        self.respond = None
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                server.requests.append(dict(self.headers))
                if server.respond is not None:
                    try:
                        server.respond(self)
                    except (BrokenPipeError, ConnectionResetError):  # the client gave up
                        pass
                    return
                body, start = server.payload, 0
                wanted = self.headers.get("Range")
                if wanted and self.headers.get("If-Range", server.etag) == server.etag:
                    start = int(wanted.removeprefix("bytes=").split("-")[0]) + server.range_shift
                    if start >= len(body):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("ETag", server.etag)
                self.end_headers()
                rest = body[start:]
                if server.cut_at is not None:
                    rest, server.cut_at = rest[: server.cut_at], None
                self.wfile.write(rest)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ChestXRay2017.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server():
    running = Server()
    yield running
    running.stop()


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "my data"


def leftovers(out: Path) -> list[str]:
    """Anything extraction could have left behind."""
    if not out.exists():
        return []
    return sorted(p.name for p in out.iterdir() if p.name != download.DOWNLOADS)


def invoke(*args):
    return CliRunner().invoke(app, ["data", "download", *map(str, args)])


def test_download_extracts_into_the_kaggle_layout_and_skips_junk(server, out):
    server.payload, films = mendeley_zip()
    result = invoke("--out", out, "--url", server.url)
    assert result.exit_code == 0, result.output
    folder = out / "chest_xray"
    got = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    assert got == {FILMS[name]: content for name, content in films.items()}
    assert "downloading" in result.stderr and "100%" in result.stderr
    assert "train: 2 NORMAL, 2 PNEUMONIA" in result.stdout
    assert not (out / ".download" / "ChestXRay2017.zip").exists()  # not kept by default
    assert leftovers(out) == ["chest_xray"]
    record = out / ".download" / "ChestXRay2017.zip.sha256"  # trusted once it extracted
    assert record.read_text().split()[0] == hashlib.sha256(server.payload).hexdigest()
    # The extracted folder is what `run` reads.
    from edgexray.pipeline import data

    assert set(data.find_class_folders(folder)) == {"train", "test"}
    again = invoke("--out", out, "--url", server.url)
    assert again.exit_code == 0 and "already there" in again.stdout
    assert len(server.requests) == 1


def test_cut_download_resumes_where_it_stopped(server, out):
    server.payload, films = mendeley_zip()
    server.cut_at = len(server.payload) // 2
    result = download.download(out, url=server.url, limits=download.FetchLimits(backoff=0))
    assert [r.get("Range") for r in server.requests] == [None, f"bytes={len(server.payload) // 2}-"]
    assert server.requests[1]["If-Range"] == '"v1"'
    assert (result.folder / "test/NORMAL/IM-0100-0001.jpeg").read_bytes() == films[
        "chest_xray/test/NORMAL/IM-0100-0001.jpeg"
    ]
    assert result.sha256 == hashlib.sha256(server.payload).hexdigest()


def test_cut_that_outlasts_the_retries_keeps_the_part_and_the_next_run_resumes(server, out):
    server.payload, _ = mendeley_zip()
    half = len(server.payload) // 2
    server.cut_at = half
    with pytest.raises(download.DownloadError, match="run the same command again to resume"):
        download.download(out, url=server.url, limits=QUICK)
    part = out / ".download" / "ChestXRay2017.zip.part"
    assert part.stat().st_size == half
    assert leftovers(out) == []
    result = download.download(out, url=server.url, limits=QUICK)
    assert server.requests[-1]["Range"] == f"bytes={half}-"
    assert result.sha256 == hashlib.sha256(server.payload).hexdigest()
    assert not part.exists()


def test_changed_file_on_the_server_restarts_instead_of_splicing(server, out):
    server.payload, _ = mendeley_zip(seed=0)
    server.cut_at = len(server.payload) // 2
    with pytest.raises(download.DownloadError):
        download.download(out, url=server.url, limits=QUICK)
    server.payload, server.etag = mendeley_zip(seed=50)[0], '"v2"'
    result = download.download(out, url=server.url, limits=QUICK)
    assert result.sha256 == hashlib.sha256(server.payload).hexdigest()


def test_bad_checksum_is_refused_with_exit_2_and_nothing_extracted(server, out):
    server.payload, _ = mendeley_zip()
    result = invoke("--out", out, "--url", server.url, "--sha256", "0" * 64)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith("error: ")  # after the progress lines
    assert "does not match" in result.stderr and "nothing was extracted" in result.stderr
    assert leftovers(out) == []
    assert list((out / ".download").iterdir()) == []  # the bad download is not resumed


def test_archive_that_differs_from_the_first_download_is_refused(server, out):
    server.payload, _ = mendeley_zip(seed=0)
    assert invoke("--out", out, "--url", server.url).exit_code == 0
    (out / "chest_xray").rename(out.parent / "moved away")
    server.payload = mendeley_zip(seed=7)[0]
    result = invoke("--out", out, "--url", server.url)
    assert result.exit_code == 2 and "recorded by the first download" in result.stderr
    assert leftovers(out) == []


def test_offline_is_a_one_line_error_with_exit_2(out):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke("--out", out, "--url", f"http://127.0.0.1:{port}/x.zip")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot reach 127.0.0.1:")
    assert "--archive" in result.stderr
    assert result.stderr.count("\n") == 1


def test_zip_slip_members_cannot_write_outside_the_data_folder(tmp_path, out):
    films = {name: film_bytes(i) for i, name in enumerate(FILMS)}
    hostile = {"../../escaped/train/NORMAL/evil.jpeg": b"x", "/abs/test/NORMAL/abs.jpeg": b"y"}
    archive = tmp_path / "hostile.zip"
    archive.write_bytes(make_zip({**films, **hostile}))
    result = download.download(out, archive=archive)
    inside = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert "chest_xray/train/NORMAL/evil.jpeg" in inside
    assert not (tmp_path.parent / "escaped").exists() and not Path("/abs").exists()
    assert all(p.resolve().is_relative_to(out.resolve()) for p in result.folder.rglob("*"))
    assert archive.exists()  # a user's archive is never removed


def test_zip_bomb_is_refused_and_nothing_extracted(tmp_path, out):
    films = {name: film_bytes(i) for i, name in enumerate(FILMS)}
    archive = tmp_path / "bomb.zip"
    zeros = {"chest_xray/train/NORMAL/zeros.jpeg": bytes(20_000_000)}
    archive.write_bytes(make_zip({**films, **zeros}))
    with pytest.raises(download.DownloadError, match="zip bomb"):
        download.download(out, archive=archive)
    assert leftovers(out) == []


def test_archive_without_a_test_folder_is_refused_and_nothing_left(tmp_path, out):
    archive = tmp_path / "half.zip"
    archive.write_bytes(make_zip({n: film_bytes(i) for i, n in enumerate(FILMS) if "/train/" in n}))
    result = invoke("--out", out, "--archive", archive)
    assert result.exit_code == 2 and "test/NORMAL" in result.stderr
    assert leftovers(out) == []


def test_kaggle_copy_with_its_nested_duplicate_is_laid_out_once(tmp_path, out, monkeypatch):
    cache = tmp_path / "kaggle cache"
    for prefix in ("chest_xray/", "chest_xray/chest_xray/", "chest_xray/__MACOSX/"):
        for i, name in enumerate(FILMS):
            path = cache / (prefix + name.removeprefix("chest_xray/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(film_bytes(i))
    (cache / "chest_xray/val/NORMAL").mkdir(parents=True)
    (cache / "chest_xray/val/NORMAL/NORMAL2-IM-1427-0001.jpeg").write_bytes(film_bytes(99))
    fake = types.SimpleNamespace(dataset_download=lambda handle: str(cache))
    monkeypatch.setitem(sys.modules, "kagglehub", fake)
    result = download.download(out, "kaggle")
    assert result.counts == {
        "train": {"NORMAL": 2, "PNEUMONIA": 2},
        "val": {"NORMAL": 1},
        "test": {"NORMAL": 1, "PNEUMONIA": 1},
    }


def test_kaggle_source_without_kagglehub_names_the_extra(out, monkeypatch):
    monkeypatch.setitem(sys.modules, "kagglehub", None)
    result = invoke("--out", out, "--source", "kaggle")
    assert result.exit_code == 2 and 'pip install "edgexray[kaggle]"' in result.stderr


def test_run_without_any_data_says_how_to_download_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEXRAY_DATA", raising=False)
    with pytest.raises(Exception, match="edgexray data download"):
        find_data(None)


def test_run_with_download_fetches_the_data_when_there_is_none(server, tmp_path, monkeypatch):
    server.payload, _ = mendeley_zip()
    mirror = dataclasses.replace(download.SOURCES["mendeley"], url=server.url)
    monkeypatch.setitem(download.SOURCES, "mendeley", mirror)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEXRAY_DATA", raising=False)
    assert find_data(None, download=True) == (tmp_path / "data" / "chest_xray").resolve()
    assert find_data(None, download=True) == (tmp_path / "data" / "chest_xray").resolve()
    assert len(server.requests) == 1  # found the second time, not fetched again


def test_run_with_download_offline_is_a_one_line_error(tmp_path, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mirror = dataclasses.replace(download.SOURCES["mendeley"], url=f"http://127.0.0.1:{port}/")
    monkeypatch.setitem(download.SOURCES, "mendeley", mirror)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGEXRAY_DATA", raising=False)
    result = CliRunner().invoke(app, ["run", "--download", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith("error: cannot reach 127.0.0.1:")
    assert not (tmp_path / "run").exists()


def free_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def last_error(result) -> str:
    """The error line, after any progress lines."""
    line = result.stderr.splitlines()[-1]
    assert line.startswith("error: "), result.stderr
    return line


# --- sweep 3: M6, a response that never extracted is not trusted ----------------------


def test_login_page_is_named_removed_and_not_pinned_so_the_real_archive_then_downloads(server, out):
    page = b"<!DOCTYPE html>\n<html><body>Please log in</body></html>\n"
    server.respond = lambda h: answer(
        h, 200, page, Content_Type="text/html", Content_Length=len(page)
    )
    first = invoke("--out", out, "--url", server.url)
    assert first.exit_code == 2
    assert "sent an HTML page, not a zip archive: is a login needed?" in last_error(first)
    assert list((out / ".download").iterdir()) == []  # neither the page nor its sha256
    server.respond = None
    server.payload, _ = mendeley_zip()
    again = invoke("--out", out, "--url", server.url)
    assert again.exit_code == 0, again.output
    assert len(server.requests) == 2  # fetched anew, not the page kept from the first run


@pytest.mark.parametrize(
    "body, length, said",
    [
        (b"", 0, "sent an empty file"),
        (None, None, "the transfer stopped early"),  # half the zip, then the server closes
    ],
    ids=["empty", "cut-short-without-length"],
)
def test_empty_or_cut_short_response_says_what_came_and_leaves_nothing(
    server, out, body, length, said
):
    server.payload, _ = mendeley_zip()
    body = server.payload[: len(server.payload) // 2] if body is None else body
    headers = {} if length is None else {"Content_Length": length}
    server.respond = lambda h: answer(h, 200, body, **headers)
    with pytest.raises(download.DownloadError, match=said):
        download.download(out, url=server.url, limits=QUICK)
    assert list((out / ".download").iterdir()) == []
    server.respond = None
    result = download.download(out, url=server.url, limits=QUICK)
    assert result.sha256 == hashlib.sha256(server.payload).hexdigest()


def test_a_login_page_pinned_by_an_older_version_is_dropped_with_its_record(server, out):
    page = b"<html>please log in</html>\n"
    downloads = out / ".download"
    downloads.mkdir(parents=True)
    (downloads / "ChestXRay2017.zip").write_bytes(page)
    digest = hashlib.sha256(page).hexdigest()
    (downloads / "ChestXRay2017.zip.sha256").write_text(f"{digest}  ChestXRay2017.zip\n")
    server.payload, _ = mendeley_zip()
    with pytest.raises(download.DownloadError, match="HTML page.*no sha256 recorded"):
        download.download(out, url=server.url, limits=QUICK)
    assert list(downloads.iterdir()) == []
    result = download.download(out, url=server.url, limits=QUICK)
    assert result.sha256 == hashlib.sha256(server.payload).hexdigest()


# --- sweep 3: M7, the disk ------------------------------------------------------------


def test_an_absurd_announced_size_is_refused_before_streaming(server, out):
    server.respond = lambda h: answer(h, 200, bytes(65536), Content_Length=10 * 1024**4)
    result = invoke("--out", out, "--url", server.url)
    assert result.exit_code == 2
    assert "announces a 10995.12 GB archive" in last_error(result)
    assert list((out / ".download").iterdir()) == []
    assert len(server.requests) == 1  # not retried


def test_an_announced_size_beyond_the_free_space_is_refused_before_streaming(
    server, out, monkeypatch
):
    announced = 5 * 10**9  # under the cap on archive size; the disk says 1 GB free
    server.respond = lambda h: answer(h, 200, bytes(65536), Content_Length=announced)
    usage = types.SimpleNamespace(total=2 * 10**9, used=10**9, free=10**9)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: usage)
    result = invoke("--out", out, "--url", server.url)
    assert result.exit_code == 2
    assert "needs about 10.00 GB" in last_error(result) and "1.00 GB free" in result.stderr
    assert not (out / ".download" / "ChestXRay2017.zip.part").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_is_called_full_not_a_cut_and_its_part_is_removed(server, out):
    server.payload, _ = mendeley_zip()
    part = out / ".download" / "ChestXRay2017.zip.part"
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write to it fails with ENOSPC
    result = invoke("--out", out, "--url", server.url)
    assert result.exit_code == 2
    line = last_error(result)
    assert line.startswith("error: no space left on device") and "cut" not in line
    assert not os.path.lexists(part)  # the disk is given back
    assert len(server.requests) == 1  # not retried as if the network had dropped
    assert invoke("--out", out, "--url", server.url).exit_code == 0


# --- sweep 3: L11, edge cases ---------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ftp", "file"])
def test_only_http_and_https_urls_are_fetched(out, scheme):
    url = {"ftp": f"ftp://127.0.0.1:{free_port()}/x.zip", "file": "file:///etc/passwd"}[scheme]
    result = invoke("--out", out, "--url", url)
    assert result.exit_code == 2
    assert "--url must be an http:// or https:// address" in last_error(result)
    assert not out.exists()


def test_a_redirect_away_from_http_is_refused(server, out):
    elsewhere = f"ftp://127.0.0.1:{free_port()}/x.zip"
    server.respond = lambda h: answer(h, 302, Location=elsewhere, Content_Length=0)
    result = invoke("--out", out, "--url", server.url)
    assert result.exit_code == 2
    assert f"redirects to {elsewhere}: only http and https" in last_error(result)


def test_a_resume_at_the_wrong_place_removes_the_part_and_the_next_run_starts_over(server, out):
    server.payload, _ = mendeley_zip()
    server.cut_at = len(server.payload) // 2
    server.range_shift = 1000  # the reconnect's 206 starts 1000 bytes late
    first = invoke("--out", out, "--url", server.url)
    assert first.exit_code == 2
    assert "resumed at the wrong place" in last_error(first) and "removed" in first.stderr
    assert not (out / ".download" / "ChestXRay2017.zip.part").exists()
    again = invoke("--out", out, "--url", server.url)
    assert again.exit_code == 0, again.output
    assert server.requests[-1].get("Range") is None


def test_a_film_name_too_long_for_the_file_system_is_refused_in_one_line(tmp_path, out):
    films = {name: film_bytes(i) for i, name in enumerate(FILMS)}
    archive = tmp_path / "long.zip"
    archive.write_bytes(make_zip({**films, f"chest_xray/train/NORMAL/{'L' * 300}.jpeg": b"x"}))
    result = invoke("--out", out, "--archive", archive)
    assert result.exit_code == 2
    line = last_error(result)
    assert "has a 305-byte name, longer than the" in line and len(line) < 300
    assert leftovers(out) == []


def test_a_long_name_that_is_not_a_film_is_skipped_without_a_word(tmp_path, out):
    films = {name: film_bytes(i) for i, name in enumerate(FILMS)}
    archive = tmp_path / "notes.zip"
    archive.write_bytes(make_zip({**films, f"chest_xray/train/NORMAL/{'L' * 300}.txt": b"x"}))
    result = invoke("--out", out, "--archive", archive)
    assert result.exit_code == 0, result.output
    assert "train: 2 NORMAL, 2 PNEUMONIA" in result.stdout


def trickle(handler, length: int = 10_000, every: float = 0.05) -> None:
    """Announce `length` bytes, then send one every `every` seconds (at most 10 s)."""
    answer(handler, 200, Content_Length=length)
    for _ in range(min(length, int(10 / every))):
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(every)


@pytest.mark.parametrize(
    "limits, said",
    [
        (dict(min_rate=1.0, rate_window=0.5), "under its --min-rate of 1 kB/s"),
        (dict(min_rate=0.0, deadline=0.5 / 60), "past its --deadline of"),
    ],
    ids=["min-rate", "deadline"],
)
def test_a_trickling_server_is_stopped_and_the_part_kept_to_resume(server, out, limits, said):
    server.respond = trickle
    started = time.monotonic()
    with pytest.raises(download.DownloadError, match=said + ".*run the same command again"):
        download.download(out, url=server.url, limits=download.FetchLimits(**limits))
    assert time.monotonic() - started < 5
    assert (out / ".download" / "ChestXRay2017.zip.part").stat().st_size > 0


@pytest.mark.parametrize(
    "option, value", [("--deadline", "inf"), ("--deadline", "0"), ("--min-rate", "-1")]
)
def test_download_limits_must_be_finite_and_positive(out, option, value):
    result = invoke("--out", out, option, value)
    assert result.exit_code == 2
    assert last_error(result).startswith("error: bad download limits:")
    assert not out.exists()


def test_a_file_named_chest_xray_is_an_error_not_already_there(out):
    out.mkdir()
    (out / "chest_xray").write_text("")
    result = invoke("--out", out)
    assert result.exit_code == 2
    assert "is in the way" in last_error(result) and "already there" not in result.stdout
