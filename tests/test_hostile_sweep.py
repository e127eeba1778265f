"""The second hostile sweep (issue 23): limits, locks, usage errors and odd environments."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.benchmarks.harness import BenchmarkConfig
from edgexray.cli import app
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
