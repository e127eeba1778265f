"""`edgexray inspect MODEL`: what a model file is, in one screen or as JSON."""

from __future__ import annotations

import json
import shutil

from sidecar_support import sidecar_inside
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL, metadata
from edgexray.edge_runtime.sidecar import load_sidecar

runner = CliRunner()


def test_inspect_shows_the_shipped_model_in_one_screen():
    result = runner.invoke(app, ["inspect"])  # the shipped model by default
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) <= 24
    sidecar = load_sidecar(REFERENCE_MODEL)
    text = result.stdout
    for expected in (
        "edgexray pneumonia classifier (int8)",
        sidecar["sha256"],
        "NORMAL, PNEUMONIA",
        "uint8, scale 0.00392157 zero point 0",
        f"{sidecar['threshold']:.6g}: chosen on the training hospital's validation films",
        "calibration  none",
        "96 pooled features (output 1), cut-off 14.01",
        "CONV_2D 7",
        "Apache-2.0",
    ):
        assert expected in text, expected


def test_inspect_json_is_for_scripts(tiny_tflite):
    result = runner.invoke(app, ["inspect", "--json", str(tiny_tflite["int8"])])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    sidecar = load_sidecar(tiny_tflite["int8"])
    assert report["sha256"] == sidecar["sha256"] == metadata.identity(tiny_tflite["int8"])
    assert report["labels"] == ["NORMAL", "PNEUMONIA"] and report["threshold"] == 0.5
    assert report["input"]["dtype"] == "uint8" and report["input"]["quantization"]["scale"] > 0
    assert report["outputs"][0]["quantization"] == sidecar["output"]["quantization"]
    assert report["associated_files"] == {
        "labels.txt": 10,
        "edgexray.json": len(metadata.read(tiny_tflite["int8"]).sidecar_bytes),
    }
    assert report["min_parser_version"] == "1.0.0" and report["sidecar"] == "inside"
    assert report["calibration"] is None and sum(report["operators"].values()) > 0


def test_inspect_takes_a_lone_model_and_refuses_a_disagreeing_copy(tiny_tflite, tmp_path):
    model = tmp_path / "lone" / "int8.tflite"
    model.parent.mkdir()
    shutil.copyfile(tiny_tflite["int8"], model)
    assert runner.invoke(app, ["inspect", "--model", str(model)]).exit_code == 0
    copy = {**sidecar_inside(model), "threshold": 0.1}
    model.with_suffix(".json").write_text(json.dumps(copy))
    result = runner.invoke(app, ["inspect", str(model)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "disagrees" in result.stderr and "(threshold)" in result.stderr


def test_inspect_refuses_a_model_given_twice_and_a_missing_one(tiny_tflite, tmp_path):
    model = str(tiny_tflite["int8"])
    result = runner.invoke(app, ["inspect", model, "--model", model])
    assert result.exit_code == 2 and "give the model once" in result.stderr
    result = runner.invoke(app, ["inspect", str(tmp_path / "none.tflite")])
    assert result.exit_code == 2 and "model not found" in result.stderr
