"""`edgexray evaluate`: device preprocessing, data layouts, odd images, clean errors."""

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import make_xray_folder, synthetic_xray
from PIL import Image
from sidecar_support import bare_flatbuffer
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL, readers
from edgexray.edge_runtime.classifier import Classifier
from edgexray.errors import EdgexrayError
from edgexray.pipeline import data
from edgexray.pipeline.evaluate import evaluate, summarize

runner = CliRunner()
REQUIRED_FIELDS = (
    "n",
    "accuracy",
    "recall",
    "specificity",
    "precision",
    "f1",
    "auc",
    "ece",
    "threshold",
    "confusion_matrix",
    "recall_ci95",
    "specificity_ci95",
    "skipped",
)


def read_predictions(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output


def test_tflite_is_scored_exactly_like_the_device_classifier(tiny_tflite, xray_folder, tmp_path):
    csv_path = tmp_path / "pred dir" / "predictions.csv"
    report = evaluate(tiny_tflite["int8"], xray_folder, predictions_csv=csv_path)
    rows = read_predictions(csv_path)
    assert report["n"] == len(rows) == 80 and report["skipped"] == 0
    classifier = Classifier(tiny_tflite["int8"])
    for row in rows[::9]:
        assert float(row["probability"]) == pytest.approx(
            classifier.probability(row["path"]), abs=1e-6
        )
    assert report["threshold"] == classifier.threshold == 0.5


def test_predictions_csv_agrees_with_the_report(tiny_tflite, xray_folder, tmp_path):
    csv_path = tmp_path / "predictions.csv"
    report = evaluate(tiny_tflite["float32"], xray_folder, predictions_csv=csv_path)
    rows = read_predictions(csv_path)
    assert list(rows[0]) == ["path", "label", "probability", "predicted"]
    labels = [data.LABELS.index(r["label"]) for r in rows]
    probabilities = [float(r["probability"]) for r in rows]
    assert [r["predicted"] for r in rows] == [data.LABELS[p >= 0.5] for p in probabilities]
    assert summarize(labels, probabilities, 0.5)["confusion_matrix"] == report["confusion_matrix"]
    assert report["predictions_csv"] == str(csv_path)


def test_threshold_option_overrides_the_sidecar(tiny_tflite, xray_folder):
    report = evaluate(tiny_tflite["float32"], xray_folder, threshold=0.0)
    assert report["threshold"] == 0.0
    assert report["recall"] == 1.0 and report["specificity"] == 0.0


def test_keras_model_uses_its_run_threshold_and_manifest_test_split(tiny_run):
    report = evaluate(tiny_run / artifacts.MODEL, tiny_run)
    run_metrics = artifacts.read_json(tiny_run / artifacts.METRICS)
    samples = data.load_manifest(tiny_run / artifacts.MANIFEST)
    assert report["kind"] == "keras" and report["split"] == "test"
    assert report["threshold"] == run_metrics["threshold"]
    assert report["n"] == sum(s.split == "test" for s in samples)
    # Same model, images and threshold as training's own test evaluation.
    assert report["confusion_matrix"] == run_metrics["test"]["at_threshold"]["confusion_matrix"]
    assert report["auc"] == pytest.approx(run_metrics["test"]["at_threshold"]["auc"], abs=1e-6)


def test_pruned_keras_model_uses_the_threshold_pruning_chose(tiny_run, tmp_path):
    run_dir = tmp_path / "run copy"
    shutil.copytree(tiny_run, run_dir)
    shutil.copy(run_dir / artifacts.MODEL, run_dir / artifacts.PRUNED)
    artifacts.write_json(run_dir / "prune.json", {"val": {"threshold": 0.125}})
    assert evaluate(run_dir / artifacts.PRUNED, run_dir)["threshold"] == 0.125


def test_run_directory_data_can_select_the_val_split(tiny_tflite, tiny_run):
    report = evaluate(tiny_tflite["float32"], tiny_run, split="val")
    samples = data.load_manifest(tiny_run / artifacts.MANIFEST)
    assert report["split"] == "val"
    assert report["n"] == sum(s.split == "val" for s in samples)


def test_kaggle_root_is_evaluated_on_its_test_folder(tiny_tflite, tmp_path):
    make_xray_folder(tmp_path / "kaggle" / "train", per_class=4, seed=1)
    make_xray_folder(tmp_path / "kaggle" / "test", per_class=3, seed=2)
    report = evaluate(tiny_tflite["float32"], tmp_path / "kaggle")
    assert report["split"] == "test" and report["n"] == 6
    with pytest.raises(EdgexrayError, match="no val/ folder"):
        evaluate(tiny_tflite["float32"], tmp_path / "kaggle", split="val")


def make_odd_folder(root):
    """Films of many sizes and modes, plus a corrupt and a truncated file."""
    rng = np.random.default_rng(7)
    normal, pneumonia = root / "NORMAL", root / "PNEUMONIA"
    normal.mkdir(parents=True)
    pneumonia.mkdir(parents=True)
    film = lambda sick, size=(40, 48): synthetic_xray(rng, sick, size)  # noqa: E731
    film(False, (300, 200)).convert("RGB").save(normal / "wide rgb.png")
    film(False).convert("RGBA").save(normal / "rgba.png")
    wide16 = (np.asarray(film(False), dtype=np.uint16) * 16).astype(np.uint16)
    Image.fromarray(wide16).save(normal / "sixteen bit.png")  # mode I;16
    film(False).convert("P").save(normal / "palette.png")
    film(False).convert("1").save(normal / "bilevel.png")
    film(False, (7, 5)).save(normal / "tiny.JPG")
    film(True, (700, 900)).save(pneumonia / "large.jpeg")
    film(True).convert("LA").save(pneumonia / "gray alpha.png")
    film(True).convert("CMYK").save(pneumonia / "cmyk.jpg")
    film(True).save(pneumonia / "plain.jpeg")
    (pneumonia / "corrupt.jpeg").write_bytes(b"this is not a JPEG at all")
    whole = (pneumonia / "plain.jpeg").read_bytes()
    (pneumonia / "truncated.jpeg").write_bytes(whole[: len(whole) // 2])
    (pneumonia / "notes.txt").write_text("not an image, not counted")
    return root


def test_cli_json_handles_images_of_any_size_and_mode(tiny_tflite, tmp_path):
    folder = make_odd_folder(tmp_path / "odd images")
    result = runner.invoke(
        app, ["evaluate", "--model", str(tiny_tflite["int8"]), "--data", str(folder), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # nothing but the JSON object on stdout
    assert all(field in report for field in REQUIRED_FIELDS)
    assert report["n"] == 10 and report["skipped"] == 2
    assert sorted(p.rsplit("/", 1)[-1] for p in report["skipped_files"]) == [
        "corrupt.jpeg",
        "truncated.jpeg",
    ]
    assert sum(map(sum, report["confusion_matrix"])) == 10
    assert "corrupt.jpeg" in result.stderr  # each skipped file is named in a warning


def test_cli_table_shows_confidence_intervals_and_calibration(tiny_tflite, xray_folder):
    result = runner.invoke(
        app, ["evaluate", "--model", str(tiny_tflite["float32"]), "--data", str(xray_folder)]
    )
    assert result.exit_code == 0, result.output
    recall_line = next(line for line in result.stdout.splitlines() if line.startswith("recall"))
    assert "[" in recall_line and "pneumonia found" in recall_line
    assert "ECE" in result.stdout and "AUC" in result.stdout


def test_a_lone_model_is_evaluated_and_a_bare_one_is_a_one_line_error(
    tiny_tflite, xray_folder, tmp_path
):
    lone = tmp_path / "lone model.tflite"
    shutil.copy(tiny_tflite["float32"], lone)  # its sidecar inside, no .json beside it
    args = ["evaluate", "--data", str(xray_folder), "--json"]
    evaluated = runner.invoke(app, [*args, "--model", str(lone)])
    beside = runner.invoke(app, [*args, "--model", str(tiny_tflite["float32"])])
    assert evaluated.exit_code == beside.exit_code == 0, evaluated.stderr
    drop = ("model",)
    assert {k: v for k, v in json.loads(evaluated.stdout).items() if k not in drop} == {
        k: v for k, v in json.loads(beside.stdout).items() if k not in drop
    }
    lone.write_bytes(bare_flatbuffer(lone))
    result = runner.invoke(app, [*args, "--model", str(lone)])
    assert_one_line_error(result)
    assert "carries no edgexray metadata and has no sidecar" in result.stderr


def test_corrupt_tflite_is_a_one_line_error(tiny_tflite, xray_folder, tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"\x00" * 64 + b"not a flatbuffer")
    sidecar = json.loads(tiny_tflite["float32"].with_suffix(".json").read_text())
    # A matching sha256, so it is the interpreter, not the checksum, that refuses it.
    sidecar["sha256"] = artifacts.sha256(corrupt)
    corrupt.with_suffix(".json").write_text(json.dumps(sidecar))
    result = runner.invoke(app, ["evaluate", "--model", str(corrupt), "--data", str(xray_folder)])
    assert_one_line_error(result)
    assert "not a loadable .tflite" in result.stderr


def test_empty_data_folder_is_a_one_line_error(tiny_tflite, tmp_path):
    (tmp_path / "empty" / "NORMAL").mkdir(parents=True)
    (tmp_path / "empty" / "PNEUMONIA").mkdir()
    result = runner.invoke(
        app, ["evaluate", "--model", str(tiny_tflite["float32"]), "--data", str(tmp_path / "empty")]
    )
    assert_one_line_error(result)
    assert "holds no" in result.stderr


def test_keras_model_outside_its_run_directory_is_refused(tiny_run, xray_folder, tmp_path):
    shutil.copy(tiny_run / artifacts.MODEL, tmp_path / "model.keras")
    result = runner.invoke(
        app, ["evaluate", "--model", str(tmp_path / "model.keras"), "--data", str(xray_folder)]
    )
    assert_one_line_error(result)
    assert "run directory" in result.stderr


def test_unknown_model_format_is_refused(xray_folder, tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    result = runner.invoke(
        app, ["evaluate", "--model", str(tmp_path / "model.onnx"), "--data", str(xray_folder)]
    )
    assert_one_line_error(result)


def test_evaluate_reports_out_of_scope_films_separately(site_folder, tmp_path):
    from edgexray.pipeline import evaluate

    inverted = tmp_path / "site with a negative"
    shutil.copytree(site_folder, inverted)
    negative = next((inverted / "PNEUMONIA").iterdir())
    Image.fromarray(255 - readers.read(negative)[0]).save(negative.with_suffix(".png"))
    negative.unlink()
    csv_path = tmp_path / "predictions.csv"
    report = evaluate.evaluate(REFERENCE_MODEL, inverted, predictions_csv=csv_path)
    assert report["out_of_scope"] == {"films": 1, "pneumonia": 1, "normal": 0}
    assert report["confusion_matrix"][1][0] >= 1  # the refused pneumonia film is not found
    assert "OUT_OF_SCOPE" in csv_path.read_text()
    assert any(
        line.startswith("out of scope 1 of 6 films") for line in evaluate.report_lines(report)
    )
