"""The second hostile sweep (issue 23): limits, locks, usage errors and odd environments."""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_TRAIN, synthetic_xray
from PIL import Image
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.benchmarks.harness import BenchmarkConfig
from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL, batch, readers
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.errors import ImageError
from edgexray.edge_runtime.preprocess import TWO_TONE_SHARE, two_tone_share
from edgexray.edge_runtime.readers import picture
from edgexray.errors import EdgexrayError
from edgexray.run import find_data

runner = CliRunner()


@pytest.mark.parametrize("threads", [(100000,), (1, 65)])
def test_benchmark_thread_counts_are_capped_as_predict_caps_them(threads):
    with pytest.raises(EdgexrayError, match="counts from 1 to 64"):
        BenchmarkConfig(threads=threads)


def test_edgexray_data_naming_a_missing_folder_is_an_error_not_a_fallback(tmp_path, monkeypatch):
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
        capture_output=True,
        text=True,
        timeout=120,
    )
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
        [
            sys.executable,
            "-m",
            "edgexray.edge_runtime.infer",
            "--model",
            str(REFERENCE_MODEL),
            "--no-scope-check",  # a drawn test image, refused as out of scope otherwise
            str(film),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "warn(" not in result.stderr
    assert "probability" in json.loads(result.stdout)


def test_a_two_tone_image_gets_a_quality_warning(tmp_path):
    blocks = (np.random.default_rng(0).random((25, 20)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(np.kron(blocks, np.ones((40, 40), np.uint8))).save(tmp_path / "two.png")
    record = Classifier(REFERENCE_MODEL).classify(tmp_path / "two.png")
    assert "two-tone" in record["quality_warning"]
    films = sorted(SHARED_TRAIN.glob("*/*.jpeg"))[:20] if SHARED_TRAIN.is_dir() else []
    for film in films:  # real films stay unflagged
        assert two_tone_share(readers.read(film)[0]) < TWO_TONE_SHARE


def test_records_of_non_utf8_file_names_are_valid_text(tmp_path):
    folder = tmp_path / "films"
    folder.mkdir()
    name = os.fsdecode(b"film \xe9.png")
    synthetic_xray(np.random.default_rng(1), pneumonia=False).save(folder / name)
    (folder / os.fsdecode(b"broken \xff.png")).write_bytes(b"not a film")
    stream = io.StringIO()
    batch.run(REFERENCE_MODEL, [folder], stream=stream)
    for line in stream.getvalue().splitlines():
        line.encode("utf-8")  # no lone surrogate
        assert "\\udc" not in line
    paths = sorted(json.loads(line)["path"] for line in stream.getvalue().splitlines())
    assert [Path(p).name for p in paths] == ["broken \\xff.png", "film \\xe9.png"]


SIGTERM_PROGRAM = """
import os, signal, sys, tempfile, time
import typer
from edgexray.cli.common import user_errors

@user_errors
def command():
    with tempfile.TemporaryDirectory(dir=sys.argv[1]) as saved_model:  # as the converter's
        open(os.path.join(saved_model, "saved_model.pb"), "wb").write(bytes(5_500_000))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)

try:
    command()
except typer.Exit as stop:
    sys.exit(stop.exit_code)
"""


def test_sigterm_stops_a_command_cleanly_removing_its_temporary_folders(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_PROGRAM, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 143, result.stderr
    assert result.stderr.strip() == "error: terminated"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "task, message",
    [
        ({"type": ["worker"], "index": 0}, 'task type \\["worker"\\] is not a job'),
        ({"type": {"worker": 0}, "index": 0}, "task type .* is not a job"),
        ({"type": "worker", "index": "0"}, 'index must be a whole number .*, got "0"'),
        ({"type": "worker", "index": True}, "index must be a whole number .*, got true"),
        ({"type": "worker", "index": 2}, "worker:2 is not in the cluster \\(2 worker"),
    ],
)
def test_odd_tf_config_tasks_are_one_clear_line(task, message):
    from edgexray.pipeline import distribute

    tf_config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": task}
    with pytest.raises(EdgexrayError, match=message):
        distribute.cluster_from_env({"TF_CONFIG": json.dumps(tf_config)})


@pytest.mark.slow
def test_a_peer_that_is_not_tensorflow_ends_in_one_line_not_a_hang(tmp_path):
    with socket.socket() as impostor, socket.socket() as free:
        impostor.bind(("127.0.0.1", 0))
        impostor.listen()  # accepts connections, never speaks gRPC
        free.bind(("127.0.0.1", 0))
        ports = free.getsockname()[1], impostor.getsockname()[1]
        free.close()
        tf_config = {
            "cluster": {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]},
            "task": {"type": "chief", "index": 0},
        }
        code = (
            "from edgexray.pipeline import distribute\n"
            "distribute.CLUSTER_TIMEOUT_SECONDS = 15\n"
            "distribute.strategy('multiworker')\n"
        )
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)),
            capture_output=True,
            text=True,
            timeout=600,
        )
    # Killed by the watchdog process: the setup holds the interpreter, so no thread or
    # signal handler inside the process could end it.
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert "did not start within 15 s" in result.stderr.strip().splitlines()[-1]
    assert time.monotonic() - started < 300


def test_memory_is_bounded_by_decoded_bytes_not_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(picture, "MAX_DECODED_BYTES", 3_000_000)
    grey = np.full((1000, 1000), 128, np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")  # 1 MB decoded
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")  # the same pixels, 4 MB
    assert readers.read(tmp_path / "grey.png")[0].shape == (1000, 1000)
    with pytest.raises(ImageError, match="1000x1000 RGBA decodes to 3 MiB, over the 2 MiB"):
        readers.read(tmp_path / "rgba.png")[0]
