"""A sidecar (sidecar.py) is checked as a whole; the gate and check.py compare printed labels.

The labels are plain names in the training order; the positive label, the output kind and
probabilities in [0, 1] are checked too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sidecar_support import put_sidecar, sidecar_inside
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.interpreter import invoke, to_probability
from edgexray.edge_runtime.sidecar import LABELS, POSITIVE_LABEL, load_sidecar
from edgexray.errors import EdgexrayError
from edgexray.export.bundle import BundleConfig, make_bundle
from edgexray.pipeline import data
from edgexray.pipeline.verify import GateLimits, compare

runner = CliRunner()


def edited(source: Path, folder: Path, **changes) -> Path:
    """A copy of a model whose sidecar (inside it, and its copy beside it) has `changes`
    (None removes a field; "output.kind" reaches into output)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / source.name
    shutil.copyfile(source, model)
    sidecar = sidecar_inside(source)
    for key, value in changes.items():
        where, name = (sidecar["output"], "kind") if key == "output_kind" else (sidecar, key)
        if value is None:
            where.pop(name, None)
        else:
            where[name] = value
    return put_sidecar(model, sidecar)


def test_training_and_the_device_share_one_label_table():
    assert data.LABELS is LABELS and POSITIVE_LABEL == LABELS[1] == "PNEUMONIA"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"labels": ["PNEUMONIA", "NORMAL"], "positive_label": "NORMAL"}, "not the order"),
        ({"labels": ["PNEUMONIA", "NORMAL"], "positive_label": None}, "not the order"),
        ({"labels": ["No Finding", "Pneumonia"], "positive_label": "Pneumonia"}, "not the order"),
        ({"positive_label": None}, "positive_label must be 'PNEUMONIA'"),
        ({"positive_label": "NORMAL"}, "positive_label must be 'PNEUMONIA'"),
        ({"output_kind": None}, "output.kind must be one of"),
    ],
)
def test_a_sidecar_that_would_print_the_wrong_label_is_refused(
    tiny_tflite, tmp_path, film, changes, message
):
    model = edited(tiny_tflite["int8"], tmp_path / "edited", **changes)
    with pytest.raises(InferenceError, match=message):
        load_sidecar(model)
    result = runner.invoke(app, ["predict", "--model", str(model), str(film)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_the_gate_fails_a_candidate_with_swapped_labels(tiny_tflite, xray_folder, tmp_path):
    swapped = edited(
        tiny_tflite["int8"],
        tmp_path / "swapped",
        labels=["PNEUMONIA", "NORMAL"],
        positive_label="NORMAL",
    )
    result = runner.invoke(
        app,
        [
            "verify",
            "--baseline",
            str(tiny_tflite["int8"]),
            "--candidate",
            str(swapped),
            "--data",
            str(xray_folder),
        ],
    )
    assert result.exit_code != 0 and "passed" not in result.stdout
    assert "labels" in result.stderr


def test_the_gate_compares_printed_labels_not_only_probabilities():
    labels = np.array([1, 1, 0, 0])
    probabilities = np.array([0.9, 0.8, 0.2, 0.1])
    report = {"recall": 1.0, "specificity": 1.0, "auc": 1.0, "accuracy": 1.0}
    baseline = {
        "probabilities": probabilities,
        "threshold": 0.5,
        "report": report,
        "called": np.array(["PNEUMONIA", "PNEUMONIA", "NORMAL", "NORMAL"]),
        "refused": None,
    }
    # The same probabilities, printed by a model whose labels are the other way round.
    candidate = {**baseline, "called": np.array(["NORMAL", "NORMAL", "PNEUMONIA", "PNEUMONIA"])}
    result = compare(labels, ["a", "b", "c", "d"], baseline, candidate, GateLimits())
    assert result["changes"]["new false negative"] == 2


def test_a_logit_model_read_as_probability_is_refused_at_load(tiny_tflite, tmp_path):
    model = edited(tiny_tflite["int8"], tmp_path / "as probability", output_kind="probability")
    with pytest.raises(InferenceError, match="the model emits the logit"):
        Classifier(model)


def test_a_probability_outside_0_1_is_an_error_never_printed(tiny_tflite, tmp_path, film):
    # A float output has no range to check at load: every value is checked instead.
    model = edited(tiny_tflite["float32"], tmp_path / "float", output_kind="probability")
    classifier = Classifier(model)
    logit = invoke(
        classifier.interpreter,
        classifier.model_input(film),
        classifier.input_detail,
        classifier.output_detail,
    )
    assert not 0.0 <= logit <= 1.0, "pick a film whose logit is not a probability"
    result = runner.invoke(app, ["predict", "--model", str(model), str(film)])
    assert result.exit_code == 2 and result.stdout == ""
    assert "not a probability in [0, 1]" in result.stderr
    with pytest.raises(InferenceError, match="not a probability"):
        to_probability(float("nan"), "probability")


def test_check_py_passes_the_output_steps_of_rounding_and_fails_more(tiny_tflite, tmp_path):
    # An emulated Pi's int8 kernels gave a Lite0 model's check image 87 where the host gave
    # 88: the bundle's own check failed a sound install (benchmarks/README.md).
    from edgexray.edge_runtime.check import OUTPUT_STEPS_ALLOWED

    bundle = Path(
        make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(tmp_path / "b")))["path"]
    )
    expected_file = bundle / "check" / "expected.json"
    expected = json.loads(expected_file.read_text())
    byte = expected["output_uint8"]
    check = [sys.executable, "check/check.py"]
    for step, passes in ((OUTPUT_STEPS_ALLOWED, True), (OUTPUT_STEPS_ALLOWED + 1, False)):
        other = byte - step if byte >= step else byte + step
        expected_file.write_text(json.dumps({**expected, "output_uint8": other}))
        run = subprocess.run(check, cwd=bundle, capture_output=True, text=True, timeout=120)
        assert (run.returncode == 0) == passes, run.stdout + run.stderr
        assert f"output byte {byte}, expected {other}" in run.stdout
        assert run.stdout.startswith("check passed" if passes else "check FAILED")


def test_check_py_fails_a_bundle_whose_sidecar_swaps_the_labels(tiny_tflite, tmp_path):
    bundle = Path(
        make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(tmp_path / "b")))["path"]
    )
    check = [sys.executable, "check/check.py"]
    passed = subprocess.run(check, cwd=bundle, capture_output=True, text=True, timeout=120)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    sidecar = sidecar_inside(bundle / "int8.tflite")
    sidecar.update(labels=["PNEUMONIA", "NORMAL"], positive_label="NORMAL")
    put_sidecar(bundle / "int8.tflite", sidecar)
    swapped = subprocess.run(check, cwd=bundle, capture_output=True, text=True, timeout=120)
    assert swapped.returncode != 0 and "check passed" not in swapped.stdout


@pytest.mark.parametrize(
    "labels",
    [
        ["NORMAL", "PNEU\nMONIA"],
        ["NORMAL", 'PNEUMONIA"); evil("'],
        ["", "PNEUMONIA"],
        ["NORMAL", "P" * 33],
        ["1NORMAL", "PNEUMONIA"],
    ],
)
def test_sidecar_labels_must_be_plain_names(tiny_tflite, tmp_path, labels):
    model = tmp_path / "model.tflite"
    shutil.copyfile(tiny_tflite["int8"], model)
    sidecar = sidecar_inside(model)
    sidecar.update(labels=labels, positive_label=labels[1])
    put_sidecar(model, sidecar)
    with pytest.raises(InferenceError, match="labels must be plain names"):
        load_sidecar(model)
    with pytest.raises(EdgexrayError, match="labels must be plain names"):
        make_bundle(BundleConfig(str(model), "android", str(tmp_path / "bundle")))
    # Plain names, but not the classes the model was trained on, in that order: refused too.
    sidecar.update(labels=["No Finding", "PNEUMONIA_2"], positive_label="PNEUMONIA_2")
    put_sidecar(model, sidecar)
    with pytest.raises(InferenceError, match="not the order the model was trained in"):
        load_sidecar(model)
