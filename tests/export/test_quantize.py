"""`edgexray quantize` (export/quantize.py): every method runs in the interpreter."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.cli import app
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.interpreter import load_interpreter
from edgexray.errors import EdgexrayError
from edgexray.export.quantize import (
    METHODS,
    QUANTIZE_REPORT,
    QuantizeConfig,
    parse_methods,
    quantize,
)
from edgexray.pipeline import data, metrics
from edgexray.pipeline.prune import PruneConfig, prune

INT8_METHODS = ("int8", "qat", "pqat", "pruned-int8")
runner = CliRunner()


@pytest.fixture(scope="module")
def quantized_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run, pruned, with every variant exported."""
    run_dir = tmp_path_factory.mktemp("quantize") / "quantized run"
    shutil.copytree(tiny_run, run_dir)
    # Every layer pruned (the tiny model's are all small): the exported sparsity is then
    # the requested one.
    prune(run_dir, PruneConfig(sparsity=0.5, epochs=1, min_layer_weights=0), verbose=0)
    quantize(run_dir, ["all"], QuantizeConfig(representative_size=16), verbose=0)
    return run_dir


@pytest.fixture
def unpruned_run(tiny_run, tmp_path) -> Path:
    run_dir = tmp_path / "run without pruning"
    shutil.copytree(tiny_run, run_dir)
    return run_dir


def _val(run_dir: Path):
    samples = data.load_manifest(run_dir / artifacts.MANIFEST)
    config = json.loads((run_dir / artifacts.CONFIG).read_text())
    return data.select(samples, "val", Path(config["data"]))


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output
    return errors[0]


def test_every_method_runs_in_the_interpreter(quantized_run):
    paths, _ = _val(quantized_run)
    for method in METHODS:
        classifier = Classifier(quantized_run / artifacts.TFLITE_DIR / f"{method}.tflite")
        assert classifier.sidecar["method"] == method
        assert 0.0 <= classifier.probability(paths[0]) <= 1.0


def test_int8_variants_read_uint8_quantization_from_details(quantized_run):
    for method in INT8_METHODS:
        path = quantized_run / artifacts.TFLITE_DIR / f"{method}.tflite"
        sidecar = json.loads(path.with_suffix(".json").read_text())
        interpreter = load_interpreter(path)
        details = {
            "input": interpreter.get_input_details()[0],
            "output": interpreter.get_output_details()[0],
        }
        for side, detail in details.items():
            scale, zero_point = detail["quantization"]
            assert sidecar[side]["dtype"] == "uint8" == detail["dtype"].__name__
            assert sidecar[side]["quantization"] == {"scale": scale, "zero_point": zero_point}


def test_each_variant_threshold_reaches_target_recall_with_its_own_probabilities(quantized_run):
    paths, labels = _val(quantized_run)
    pneumonia = np.asarray(labels).astype(bool)
    for method in METHODS:
        classifier = Classifier(quantized_run / artifacts.TFLITE_DIR / f"{method}.tflite")
        probabilities = np.array([classifier.probability(p) for p in paths])
        report = metrics.classification_report(labels, probabilities, classifier.threshold)
        assert report["recall"] >= classifier.sidecar["target_recall"], method
        # ... and flags the recall margin's films beyond it, as far as there are any
        margin = classifier.sidecar["method_config"]["recall_margin_films"]
        needed = math.ceil(classifier.sidecar["target_recall"] * pneumonia.sum() - 1e-9)
        flagged = int(np.sum(probabilities[pneumonia] >= classifier.threshold))
        assert margin == QuantizeConfig().recall_margin_films
        assert flagged >= min(needed + margin, pneumonia.sum()), method


def test_pruned_variants_keep_sparsity_in_exported_weights(quantized_run):
    report = json.loads((quantized_run / QUANTIZE_REPORT).read_text())["variants"]
    assert list(report) == list(METHODS)
    for method in ("pqat", "pruned-int8"):
        assert abs(report[method]["sparsity"] - 0.5) <= 0.02, method
        assert report[method]["method_config"]["prune"]["sparsity"] == 0.5
    assert report["int8"]["sparsity"] < 0.1
    assert report["int8"]["size_bytes"] < report["float32"]["size_bytes"] / 2
    assert report["pruned-int8"]["gzip_bytes"] < report["int8"]["gzip_bytes"]


def test_qat_and_pqat_record_the_fine_tune_they_had(quantized_run):
    report = json.loads((quantized_run / QUANTIZE_REPORT).read_text())["variants"]
    for method in ("qat", "pqat"):
        assert report[method]["method_config"]["learning_rate"] == 3e-5, method
    assert "learning_rate" not in report["int8"]["method_config"]


def test_quantize_cli_checks_the_fine_tune_learning_rate(unpruned_run):
    result = runner.invoke(
        app, ["quantize", str(unpruned_run), "-m", "qat", "--qat-learning-rate", "0"]
    )
    assert "qat_learning_rate must be > 0" in _one_line_error(result)
    assert not (unpruned_run / artifacts.TFLITE_DIR).exists()


def test_parse_methods_accepts_repeats_commas_and_all():
    assert parse_methods(["int8", "float32,qat", "int8"]) == ("float32", "int8", "qat")
    assert parse_methods(["all"]) == METHODS
    with pytest.raises(EdgexrayError, match="unknown method int4"):
        parse_methods(["int8,int4"])


def test_quantize_cli_with_bad_method_exits_2(unpruned_run):
    error = _one_line_error(runner.invoke(app, ["quantize", str(unpruned_run), "-m", "int4"]))
    assert "unknown method int4" in error


def test_quantize_cli_without_trained_model_exits_2(tmp_path):
    error = _one_line_error(runner.invoke(app, ["quantize", str(tmp_path), "-m", "int8"]))
    assert "edgexray train" in error


def test_pruned_methods_without_pruned_model_ask_for_prune(unpruned_run):
    for method in ("pqat", "all"):
        error = _one_line_error(runner.invoke(app, ["quantize", str(unpruned_run), "-m", method]))
        assert "edgexray prune" in error
    assert not (unpruned_run / artifacts.TFLITE_DIR).exists()


def test_a_val_film_unreadable_since_the_scan_stops_the_stage_with_one_line(unpruned_run, tmp_path):
    config_path = unpruned_run / artifacts.CONFIG
    config = json.loads(config_path.read_text())
    films = tmp_path / "films"
    shutil.copytree(config["data"], films)
    config_path.write_text(json.dumps(config | {"data": str(films)}))
    paths, _ = _val(unpruned_run)
    Path(paths[0]).write_bytes(b"not a film any more")
    error = _one_line_error(runner.invoke(app, ["quantize", str(unpruned_run), "-m", "float16"]))
    assert "unreadable since the data was scanned" in error
    assert not (unpruned_run / artifacts.TFLITE_DIR / "float16.tflite").exists()
