"""The base install (`pip install edgexray`, no `train` extra): TensorFlow absent.

The CLI runs in a subprocess whose imports of tensorflow, tf_keras, keras and tfmot fail
(tests/edge_support.py): the .tflite commands must work on real films without ever trying
them, and the commands that need TensorFlow must say how to install it, in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SHARED_TRAIN
from edge_support import TENSORFLOW, attempted_imports, blocked_env, one_error_line

from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL, metadata
from edgexray.errors import INSTALL_TRAIN

SHARED_TEST = SHARED_TRAIN.parent / "test"
needs_films = pytest.mark.skipif(not SHARED_TEST.is_dir(), reason="needs ../shared/data")


def edgexray(args, tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`edgexray ARGS` with TensorFlow unimportable; the run and the imports it attempted."""
    env = blocked_env(tmp_path / "blocker", blocked=TENSORFLOW)
    env["PYTHONPATH"] += os.pathsep + str(REPO)  # this checkout's edgexray
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from edgexray.cli import app; app(prog_name='edgexray')",
            *map(str, args),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, attempted_imports(env)


def site_sample(folder: Path, per_class: int) -> Path:
    """The first real films of ../shared's test/ folder, copied under `folder`."""
    for label in ("NORMAL", "PNEUMONIA"):
        (folder / label).mkdir(parents=True)
        for film in sorted((SHARED_TEST / label).iterdir())[:per_class]:
            shutil.copyfile(film, folder / label / film.name)
    return folder


@needs_films
def test_tflite_commands_run_on_real_films_without_tensorflow(tmp_path):
    site = site_sample(tmp_path / "site sample", per_class=10)

    predict, tried = edgexray(["predict", site / "NORMAL", site / "PNEUMONIA"], tmp_path)
    # 4: some film was refused as out of scope (about 1.6% of test/ films are).
    assert predict.returncode in (0, 4) and tried == [], predict.stderr
    records = [json.loads(line) for line in predict.stdout.splitlines()]
    labels = [r["label"] for r in records]
    assert len(records) == 20 and set(labels) <= {"NORMAL", "PNEUMONIA", "OUT_OF_SCOPE"}
    assert labels.count("OUT_OF_SCOPE") <= 2 and (predict.returncode == 4) == (
        "OUT_OF_SCOPE" in labels
    )

    evaluate, tried = edgexray(
        ["evaluate", "--model", REFERENCE_MODEL, "--data", site, "--json"], tmp_path
    )
    assert (evaluate.returncode, tried) == (0, []), evaluate.stderr
    report = json.loads(evaluate.stdout)
    assert report["n"] == 20 and report["recall"] >= 0.9, report

    out = tmp_path / "calibrated model"
    calibrate, tried = edgexray(
        [
            "calibrate",
            REFERENCE_MODEL,
            "--data",
            site,
            "--out",
            out,
            "--folds",
            "2",
            "--allow-point-estimate",
        ],
        tmp_path,
    )
    assert (calibrate.returncode, tried) == (0, []), calibrate.stderr
    sidecar = json.loads((out / "edgexray-int8.json").read_text())
    assert sidecar["calibration"]["sample"]["n"] == 20
    # Only the metadata was rewritten: the same graph, the same identity.
    calibrated = metadata.read(out / "edgexray-int8.tflite")
    assert calibrated.sha256 == metadata.identity(REFERENCE_MODEL) == sidecar["sha256"]
    assert json.loads(calibrated.sidecar_bytes) == sidecar


@needs_films
@pytest.mark.parametrize("command", ["train", "run"])
def test_training_refuses_with_the_install_line_without_tensorflow(tmp_path, command):
    site = site_sample(tmp_path / "films", per_class=2)
    out = tmp_path / "run dir"
    result, tried = edgexray([command, "--data", site, "--out", out], tmp_path)
    assert result.returncode == 2 and "tensorflow" in tried
    line = one_error_line(result.stderr)
    assert line.endswith(INSTALL_TRAIN) and "TensorFlow" in line, line
    assert not out.exists()  # refused before writing anything


def test_help_of_every_command_works_without_tensorflow(tmp_path):
    env = blocked_env(tmp_path / "blocker", blocked=TENSORFLOW)
    env["PYTHONPATH"] += os.pathsep + str(REPO)
    code = (
        "from typer.testing import CliRunner\n"
        "from edgexray.cli import app\n"
        "names = [c.name or c.callback.__name__ for c in app.registered_commands]\n"
        "for args in [['--help']] + [[name, '--help'] for name in names]:\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    ok = result.exit_code == 0 and 'usage:' in result.output.lower()  # serve: argparse\n"
        "    assert ok, (args, result.output)\n"
        "print(len(names))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(app.registered_commands) >= 10
    assert attempted_imports(env) == []
