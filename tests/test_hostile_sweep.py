"""The second hostile sweep (issue 23): limits, locks, usage errors and odd environments."""

from __future__ import annotations

import fcntl
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_TRAIN, synthetic_xray
from PIL import Image
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.benchmarks.harness import BenchmarkConfig
from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL, infer
from edgexray.errors import EdgexrayError
from edgexray.run import find_data

runner = CliRunner()


@pytest.mark.parametrize("threads", [(100000,), (1, 65)])
def test_benchmark_thread_counts_are_capped_as_predict_caps_them(threads):
    with pytest.raises(EdgexrayError, match="counts from 1 to 64"):
        BenchmarkConfig(threads=threads)


def test_edgexray_data_naming_a_missing_folder_is_an_error_not_a_fallback(
    tmp_path, monkeypatch
):
    (tmp_path / "data" / "chest_xray").mkdir(parents=True)  # what it used to fall back to
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEXRAY_DATA", str(tmp_path / "no such data"))
    with pytest.raises(EdgexrayError, match="EDGEXRAY_DATA=.*no such data is not a folder"):
        find_data(None)
    monkeypatch.setenv("EDGEXRAY_DATA", str(tmp_path / "data" / "chest_xray"))
    assert find_data(None) == (tmp_path / "data" / "chest_xray").resolve()


def test_a_second_run_into_a_locked_run_folder_is_refused(xray_folder, tmp_path):
    run_dir = tmp_path / "busy run"
    run_dir.mkdir()
    # Another process's lock: flock conflicts between open file descriptions.
    with open(run_dir / artifacts.LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = runner.invoke(app, ["run", "--data", str(xray_folder), "--out", str(run_dir)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and "in use by another edgexray command" in (
        result.stderr
    )
    assert len(result.stderr.splitlines()) == 1
    assert os.listdir(run_dir) == [artifacts.LOCK]
    # Released: the same process may take it, and take it again inside (run calls train).
    with artifacts.locked(run_dir), artifacts.locked(run_dir):
        pass


@pytest.mark.parametrize(
    "args, message",
    [
        (["verify", "--bogus"], "error: No such option: --bogus (see --help)"),
        (["predict", "--threads", "x", "a.png"], "error: Invalid value for '--threads'"),
        (["nonsense"], "error: No such command 'nonsense'"),
    ],
)
def test_usage_errors_are_one_line(args, message):
    result = subprocess.run(
        [sys.executable, "-c", "from edgexray.cli import app; app()", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


def corrupt_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF block names tag data far past its end."""
    entries = [(0x010F, 2, 100, 0x1000), (0x0112, 3, 1, 6 << 16)]
    ifd = struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHII", *e) for e in entries)
    film = np.asarray(synthetic_xray(np.random.default_rng(3), pneumonia=True, size=(96, 80)))
    Image.fromarray(film).save(path, exif=b"Exif\0\0MM\0\x2a\0\0\0\x08" + ifd + b"\0\0\0\0")
    return path


def test_a_jpeg_with_a_corrupt_exif_block_leaks_no_warning(tmp_path):
    film = corrupt_exif_jpeg(tmp_path / "bad exif.jpeg")
    result = subprocess.run(
        [sys.executable, "-m", "edgexray.edge_runtime.infer", "--model", str(REFERENCE_MODEL),
         str(film)], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "warn(" not in result.stderr
    assert "probability" in json.loads(result.stdout)


def test_a_two_tone_image_gets_a_quality_warning(tmp_path):
    blocks = (np.random.default_rng(0).random((25, 20)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(np.kron(blocks, np.ones((40, 40), np.uint8))).save(tmp_path / "two.png")
    record = infer.Classifier(REFERENCE_MODEL).classify(tmp_path / "two.png")
    assert "two-tone" in record["quality_warning"]
    films = sorted(SHARED_TRAIN.glob("*/*.jpeg"))[:20] if SHARED_TRAIN.is_dir() else []
    for film in films:  # real films stay unflagged
        assert infer.two_tone_share(infer.load_grayscale(film)) < infer.TWO_TONE_SHARE


def test_records_of_non_utf8_file_names_are_valid_text(tmp_path):
    folder = tmp_path / "films"
    folder.mkdir()
    name = os.fsdecode(b"film \xe9.png")
    synthetic_xray(np.random.default_rng(1), pneumonia=False).save(folder / name)
    (folder / os.fsdecode(b"broken \xff.png")).write_bytes(b"not a film")
    stream = io.StringIO()
    infer.run(REFERENCE_MODEL, [folder], stream=stream)
    for line in stream.getvalue().splitlines():
        line.encode("utf-8")  # no lone surrogate
        assert "\\udc" not in line
    paths = sorted(json.loads(line)["path"] for line in stream.getvalue().splitlines())
    assert [Path(p).name for p in paths] == ["broken \\xff.png", "film \\xe9.png"]
