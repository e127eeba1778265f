"""A .tflite without its .json works everywhere a model is taken (issue 29): the sidecar is
inside it. Predict, evaluate and inspect of a lone model are in their own tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from edge_support import run_blocked
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL
from edgexray.edge_runtime.node.config import NodeConfig
from edgexray.edge_runtime.node.server import Node
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.export.bundle import BundleConfig, make_bundle

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lone(tiny_tflite, tmp_path) -> Path:
    folder = tmp_path / "lone model"
    folder.mkdir()
    return Path(shutil.copyfile(tiny_tflite["int8"], folder / "int8.tflite"))


def test_verify_takes_lone_models(lone, tiny_tflite, xray_folder):
    args = ["verify", "--baseline", str(tiny_tflite["int8"]), "--candidate", str(lone)]
    result = runner.invoke(app, [*args, "--data", str(xray_folder)])
    assert result.exit_code == 0, result.stderr
    assert "passed" in result.stdout


def test_calibrate_takes_a_lone_model_and_writes_one_with_its_copy(lone, xray_folder, tmp_path):
    out = tmp_path / "site"
    result = runner.invoke(
        app,
        ["calibrate", "--model", str(lone), "--data", str(xray_folder), "--out", str(out)]
        + ["--target-recall", "0.9", "--confidence", "0.9"],
    )
    assert result.exit_code == 0, result.stderr
    calibrated = load_sidecar(out / lone.name)
    assert calibrated["sha256"] == load_sidecar(lone)["sha256"]
    assert json.loads((out / "int8.json").read_text()) == calibrated
    assert not lone.with_suffix(".json").exists()  # the source is only read


def test_explain_takes_a_lone_model(lone, film, tmp_path):
    out = tmp_path / "heatmaps"
    result = runner.invoke(app, ["explain", "--model", str(lone), str(film), "--out", str(out)])
    assert result.exit_code in (0, 4), result.stderr  # 4: a synthetic film out of scope
    assert list(out.glob("*.heatmap.png"))


def test_the_node_serves_a_lone_model(tmp_path):
    model = Path(shutil.copyfile(REFERENCE_MODEL, tmp_path / REFERENCE_MODEL.name))
    config = NodeConfig(
        model=model, state=tmp_path / "state", allowed_aes=("MODALITY",), host="127.0.0.1", port=0
    )
    node = Node(config).start()
    try:
        assert node.classifier.sidecar == load_sidecar(REFERENCE_MODEL)
    finally:
        node.stop()


def test_the_device_module_runs_a_lone_model(lone, film):
    result = subprocess.run(
        [sys.executable, "-m", "edgexray.edge_runtime.infer", "--model", str(lone), str(film)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode in (0, 4), result.stderr
    assert json.loads(result.stdout)["threshold"] == load_sidecar(lone)["threshold"]


def test_an_rpi_bundle_without_its_json_still_checks_and_runs(lone, film, tmp_path):
    out = Path(make_bundle(BundleConfig(str(lone), "rpi", str(tmp_path / "rpi")))["path"])
    (out / "int8.json").unlink()
    check = run_blocked([sys.executable, "check/check.py"], tmp_path, cwd=out)
    assert check.returncode == 0, check.stdout + check.stderr
    infer = run_blocked([sys.executable, "infer.py", str(film)], tmp_path, cwd=out)
    assert infer.returncode in (0, 4), infer.stderr
    assert json.loads(infer.stdout)["threshold"] == load_sidecar(lone)["threshold"]
