"""`edgexray verify`: the recall gate passes identical models and fails ones that miss more."""

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from sidecar_support import bare_flatbuffer, put_sidecar, sidecar_inside
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.errors import EdgexrayError
from edgexray.pipeline import metrics
from edgexray.pipeline.evaluate import evaluate
from edgexray.pipeline.verify import REPORT, GateLimits, RecallRegressionError, verify

runner = CliRunner()


def copy_model(source, target, threshold=None):
    """Copy a .tflite with its sidecar (inside, and the readable copy); the threshold is
    metadata, so editing it leaves the model's identity and the sidecar valid."""
    sidecar = load_sidecar(source)
    if threshold is not None:
        sidecar = {**sidecar, "threshold": threshold}
    return artifacts.write_model(target, source.read_bytes(), sidecar)


def pneumonia_probabilities(model, data_path, tmp_path):
    report = evaluate(model, data_path, predictions_csv=tmp_path / "probabilities.csv")
    lines = (tmp_path / "probabilities.csv").read_text().splitlines()[1:]
    rows = [line.rsplit(",", 3) for line in lines]
    return report, sorted(float(p) for _, label, p, _ in rows if label == "PNEUMONIA")


@pytest.fixture()
def strict_pair(tiny_tflite, xray_folder, tmp_path):
    """A baseline finding all 40 pneumonia cases, the same model with a raised threshold,
    and how many cases the raised threshold misses."""
    _, positives = pneumonia_probabilities(tiny_tflite["float32"], xray_folder, tmp_path)
    distinct = sorted(set(positives))
    assert len(distinct) >= 2, "the tiny model gives every pneumonia film the same score"
    # Thresholds between distinct (6-decimal) scores, so rounding cannot move any image.
    low = distinct[0] / 2
    raised = (distinct[0] + distinct[1]) / 2
    baseline = copy_model(tiny_tflite["float32"], tmp_path / "models" / "baseline.tflite", low)
    candidate = copy_model(tiny_tflite["float32"], tmp_path / "models" / "strict.tflite", raised)
    return baseline, candidate, positives.count(distinct[0])


def test_identical_candidate_passes_with_no_flips(tiny_tflite, xray_folder, tmp_path):
    twin = copy_model(tiny_tflite["float32"], tmp_path / "twin dir" / "twin.tflite")
    report = verify(tiny_tflite["float32"], [twin], xray_folder)
    (candidate,) = report["candidates"]
    assert report["passed"] and candidate["passed"] and report["n"] == 80
    assert candidate["delta"] == {"recall": 0.0, "specificity": 0.0, "auc": 0.0, "accuracy": 0.0}
    assert candidate["flipped"] == [] and candidate["mcnemar"]["p_value"] == 1.0


def test_raised_threshold_fails_with_new_false_negatives_listed(strict_pair, xray_folder):
    baseline, candidate, missed = strict_pair
    with pytest.raises(RecallRegressionError) as caught:
        verify(baseline, [candidate], xray_folder)
    report = caught.value.report
    assert caught.value.exit_code == 1 and not report["passed"]
    assert report["failed"] == ["strict"] and "strict recall" in str(caught.value)
    result = report["candidates"][0]
    assert report["baseline"]["recall"] == 1.0
    assert result["recall"] == pytest.approx((40 - missed) / 40)
    assert result["recall_drop"] == pytest.approx(missed / 40)
    assert result["changes"]["new false negative"] == missed
    assert [f["change"] for f in result["flipped"][:missed]] == ["new false negative"] * missed
    # A higher threshold can only lose positives and drop false alarms: no other change.
    assert result["changes"]["new false positive"] == result["changes"]["fixed false negative"] == 0
    mcnemar = result["mcnemar"]
    assert mcnemar["baseline_only_correct"] == missed
    assert mcnemar["candidate_only_correct"] == result["changes"]["fixed false positive"]
    assert mcnemar["p_value"] == metrics.mcnemar_exact(
        mcnemar["baseline_only_correct"], mcnemar["candidate_only_correct"]
    )


def test_allowed_recall_drop_lets_the_candidate_pass(strict_pair, xray_folder):
    baseline, candidate, missed = strict_pair
    report = verify(
        baseline, [candidate], xray_folder, limits=GateLimits(max_recall_drop=missed / 40)
    )
    assert report["passed"] and report["candidates"][0]["recall_drop"] > 0


def test_cli_exits_1_and_names_only_the_failing_candidate(strict_pair, xray_folder, tmp_path):
    baseline, candidate, missed = strict_pair
    twin = copy_model(baseline, tmp_path / "twin.tflite")
    args = ["verify", "--baseline", str(baseline), "--candidate", str(twin)]
    result = runner.invoke(app, [*args, "--candidate", str(candidate), "--data", str(xray_folder)])
    assert result.exit_code == 1, result.output
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "twin" not in error
    assert f"strict recall {(40 - missed) / 40:.4f} vs baseline 1.0000" in error
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line}
    assert rows["strict"].endswith("FAIL") and rows["twin"].endswith("pass")


def test_cli_exits_0_on_an_identical_candidate(tiny_tflite, xray_folder, tmp_path):
    twin = copy_model(tiny_tflite["int8"], tmp_path / "twin.tflite")
    result = runner.invoke(
        app,
        [
            "verify",
            "--baseline",
            str(tiny_tflite["int8"]),
            "--candidate",
            str(twin),
            "--data",
            str(xray_folder),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "passed" in result.stdout


@pytest.fixture()
def run_copy(tiny_run, tiny_tflite, tmp_path):
    """A copy of the tiny run with a float32 candidate at the run's own threshold."""
    run_dir = tmp_path / "run copy"
    shutil.copytree(tiny_run, run_dir)
    threshold = artifacts.read_json(run_dir / artifacts.METRICS)["threshold"]
    copy_model(tiny_tflite["float32"], run_dir / "tflite" / "float32.tflite", threshold)
    return run_dir


def test_run_verify_passes_the_converted_float_model_and_writes_report(run_copy):
    result = runner.invoke(app, ["verify", str(run_copy)])
    assert result.exit_code == 0, result.output
    report = json.loads((run_copy / REPORT).read_text())
    assert report["passed"] and report["split"] == "test"
    assert report["baseline"]["kind"] == "keras"
    assert [c["name"] for c in report["candidates"]] == ["float32"]


def test_run_verify_writes_report_when_a_candidate_fails(run_copy, tiny_tflite, tmp_path):
    keras_report, positives = pneumonia_probabilities(
        run_copy / artifacts.MODEL, run_copy, tmp_path
    )
    found = [p for p in positives if p >= keras_report["threshold"]]
    assert found, "the tiny baseline finds no pneumonia in the test split"
    # Above the lowest-scored pneumonia the baseline finds, below the next one (or 1).
    raised = (found[0] + (found[1] if len(found) > 1 else 1.0)) / 2
    copy_model(tiny_tflite["float32"], run_copy / "tflite" / "raised.tflite", raised)
    result = runner.invoke(app, ["verify", str(run_copy)])
    assert result.exit_code == 1, result.output
    assert "raised recall" in result.stderr
    report = json.loads((run_copy / REPORT).read_text())
    assert not report["passed"] and report["failed"] == ["raised"]
    assert {c["name"]: c["passed"] for c in report["candidates"]} == {
        "float32": True,
        "raised": False,
    }


def assert_one_line_error(result):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


def test_missing_candidate_sidecar_exits_2(tiny_tflite, xray_folder, tmp_path):
    lone = tmp_path / "lone.tflite"  # a bare flatbuffer: no metadata inside, no .json
    lone.write_bytes(bare_flatbuffer(tiny_tflite["int8"]))
    result = runner.invoke(
        app,
        [
            "verify",
            "--baseline",
            str(tiny_tflite["float32"]),
            "--candidate",
            str(lone),
            "--data",
            str(xray_folder),
        ],
    )
    assert_one_line_error(result)
    assert "carries no edgexray metadata and has no sidecar" in result.stderr


def test_corrupt_candidate_exits_2(tiny_tflite, xray_folder, tmp_path):
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(np.random.default_rng(0).bytes(256))
    sidecar = json.loads(tiny_tflite["float32"].with_suffix(".json").read_text())
    sidecar["sha256"] = artifacts.sha256(corrupt)
    corrupt.with_suffix(".json").write_text(json.dumps(sidecar))
    result = runner.invoke(
        app,
        [
            "verify",
            "--baseline",
            str(tiny_tflite["float32"]),
            "--candidate",
            str(corrupt),
            "--data",
            str(xray_folder),
        ],
    )
    assert_one_line_error(result)


def test_empty_data_folder_exits_2(tiny_tflite, tmp_path):
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "empty" / label).mkdir(parents=True)
    result = runner.invoke(
        app,
        [
            "verify",
            "--baseline",
            str(tiny_tflite["float32"]),
            "--candidate",
            str(tiny_tflite["int8"]),
            "--data",
            str(tmp_path / "empty"),
        ],
    )
    assert_one_line_error(result)


def test_run_without_tflite_models_exits_2(tiny_run):
    result = runner.invoke(app, ["verify", str(tiny_run)])
    assert_one_line_error(result)
    assert "holds no .tflite" in result.stderr
    assert not (tiny_run / REPORT).exists()


def test_recall_cannot_pass_vacuously_without_pneumonia_images(tiny_tflite, tmp_path, xray_folder):
    shutil.copytree(xray_folder / "NORMAL", tmp_path / "normal only" / "NORMAL")
    with pytest.raises(EdgexrayError, match="no PNEUMONIA image"):
        verify(tiny_tflite["float32"], [tiny_tflite["int8"]], tmp_path / "normal only")


@pytest.mark.parametrize(
    "threshold", ["NaN", "Infinity", "-Infinity", "1.5", "-0.1", '"0.5"', "true", "null"]
)
def test_a_threshold_that_is_not_a_probability_in_metrics_json_exits_2(run_copy, threshold):
    """JSON readers accept NaN; a NaN threshold called every film normal and passed the gate."""
    path = run_copy / artifacts.METRICS
    recorded = json.loads(path.read_text())["threshold"]
    text = path.read_text().replace(f'"threshold": {recorded!r}', f'"threshold": {threshold}', 1)
    path.write_text(text)
    for args in (
        ["verify", str(run_copy)],
        ["evaluate", "--model", str(run_copy / "model.keras"), "--data", str(run_copy)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "threshold" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), 2.0])
def test_a_sidecar_threshold_that_is_not_a_probability_exits_2(
    tiny_tflite, xray_folder, tmp_path, threshold
):
    candidate = tmp_path / "bad.tflite"
    copy_model(tiny_tflite["float32"], candidate)
    put_sidecar(candidate, {**sidecar_inside(candidate), "threshold": threshold}, copy=False)
    args = [
        "verify",
        "--baseline",
        str(tiny_tflite["float32"]),
        "--candidate",
        str(candidate),
        "--data",
        str(xray_folder),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "threshold" in result.stderr, result.output


def test_threshold_option_nan_exits_2(tiny_tflite, xray_folder):
    args = [
        "evaluate",
        str(tiny_tflite["float32"]),
        "--data",
        str(xray_folder),
        "--threshold",
        "nan",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "threshold" in result.stderr, result.output


def test_a_candidate_calling_every_film_pneumonia_fails_on_specificity(
    tiny_tflite, xray_folder, tmp_path
):
    """Threshold 0: recall 1, specificity 0. Recall alone would let it ship."""
    everything = copy_model(tiny_tflite["float32"], tmp_path / "everything.tflite", threshold=0.0)
    args = [
        "verify",
        "--baseline",
        str(tiny_tflite["float32"]),
        "--candidate",
        str(everything),
        "--data",
        str(xray_folder),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "specificity dropped" in result.stderr
    with pytest.raises(RecallRegressionError) as caught:
        verify(tiny_tflite["float32"], [everything], xray_folder)
    (candidate,) = caught.value.report["candidates"]
    assert candidate["recall"] == 1.0 and candidate["specificity"] == 0.0
    assert candidate["failures"] and candidate["failures"][0].startswith("specificity")
    assert caught.value.report["max_specificity_drop"] == 0.10
    # A looser limit is the user's explicit choice.
    report = verify(
        tiny_tflite["float32"],
        [everything],
        xray_folder,
        limits=GateLimits(max_specificity_drop=1.0, max_auc_drop=1.0),
    )
    assert report["passed"]


def test_gate_limits_refuse_nonsense():
    for bad in (
        dict(max_auc_drop=float("nan")),
        dict(max_specificity_drop=-0.1),
        dict(max_recall_drop=2),
    ):
        with pytest.raises(EdgexrayError):
            GateLimits(**bad)


def test_recorded_variants_pass_the_default_limits():
    """The defaults must not fail the variants the recorded run shipped or compared."""
    recorded = json.loads((REPO / "benchmarks/results/verify.json").read_text())
    limits = GateLimits()
    for candidate in recorded["candidates"]:
        assert -candidate["delta"]["specificity"] <= limits.max_specificity_drop
        assert -candidate["delta"]["auc"] <= limits.max_auc_drop


def test_cli_gate_defaults_are_the_library_defaults():
    import inspect

    from edgexray.cli import run, verify

    limits = dataclasses.asdict(GateLimits())
    for command in (verify.command, run.command):
        parameters = inspect.signature(command).parameters
        assert {name: parameters[name].default for name in limits} == limits


@pytest.fixture()
def run_with_own_data(run_copy, tiny_config, tmp_path):
    """run_copy reading a private copy of its data, so films can be deleted."""
    data_copy = tmp_path / "data copy"
    shutil.copytree(tiny_config.data, data_copy)
    config = json.loads((run_copy / artifacts.CONFIG).read_text())
    (run_copy / artifacts.CONFIG).write_text(json.dumps({**config, "data": str(data_copy)}))
    return run_copy, data_copy


@pytest.mark.parametrize("mode", ["run", "data"])
def test_gate_refuses_when_films_of_the_recorded_split_are_missing(run_with_own_data, mode):
    run_dir, data_copy = run_with_own_data
    test_films = [
        line.split(",")[0]
        for line in (run_dir / artifacts.MANIFEST).read_text().splitlines()
        if line.endswith(",test")
    ]
    for relative in test_films[:3]:
        (data_copy / relative).unlink()
    if mode == "run":
        args = ["verify", str(run_dir)]
    else:
        model = run_dir / "tflite" / "float32.tflite"
        args = [
            "verify",
            "--baseline",
            str(run_dir / artifacts.MODEL),
            "--candidate",
            str(model),
            "--data",
            str(run_dir),
        ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("error: 3 of ") and "films of the test split" in line
    assert "passed" not in result.stdout
    assert not (run_dir / REPORT).exists()


def test_gate_refuses_when_the_films_a_candidate_misses_are_unreadable(
    strict_pair, xray_folder, tmp_path
):
    baseline, candidate, missed = strict_pair
    with pytest.raises(RecallRegressionError) as caught:
        verify(baseline, [candidate], xray_folder)
    flips = caught.value.report["candidates"][0]["flipped"]
    newly_missed = [f["path"] for f in flips if f["change"] == "new false negative"]
    assert len(newly_missed) == missed
    folder = tmp_path / "site copy"
    shutil.copytree(xray_folder, folder)
    for path in newly_missed:  # what a hostile user does to make the candidate pass
        (folder / Path(path).relative_to(xray_folder)).write_bytes(b"not a film")
    with pytest.raises(EdgexrayError, match=rf"^{missed} of 80 films in .* unreadable") as refused:
        verify(baseline, [candidate], folder)
    assert refused.value.exit_code == 2


def candidate_with_cutoff(folder: Path, cutoff: float) -> Path:
    """The shipped model under another name, its scope cut-off replaced."""
    folder.mkdir()
    candidate = folder / "guarded.tflite"
    sidecar = copy.deepcopy(load_sidecar(REFERENCE_MODEL))
    sidecar["scope"]["cutoff"] = cutoff
    return artifacts.write_model(candidate, REFERENCE_MODEL.read_bytes(), sidecar)


def test_gate_fails_a_guard_that_refuses_too_many_films_not_on_recall(site_folder, tmp_path):
    from edgexray.pipeline import verify

    candidate = candidate_with_cutoff(tmp_path / "refusing model", 0.5)  # refuses every film
    report = verify.verify(REFERENCE_MODEL, [REFERENCE_MODEL], site_folder)
    assert report["passed"] and report["baseline"]["out_of_scope"]["films"] == 0
    with pytest.raises(verify.RecallRegressionError) as failed:
        verify.verify(REFERENCE_MODEL, [candidate], site_folder)
    refusing = failed.value.report["candidates"][0]
    assert refusing["failures"] == [
        "refused 6 of 6 films as out of scope (3 pneumonia; allowed 5.0% of them)"
    ]
    # Refusing changes no call of the model: its recall is the model's own, as the baseline's.
    assert refusing["recall"] == report["baseline"]["recall"]
    assert len(refusing["refused"]) == 6 and refusing["changes"]["new false negative"] == 0


def test_gate_passes_a_refused_pneumonia_film_the_model_found(site_folder, tmp_path):
    from edgexray.pipeline import verify

    classifier = Classifier(REFERENCE_MODEL)
    records = [classifier.classify(path) for path in sorted(site_folder.glob("*/*"))]
    pneumonia = [r for r in records if "PNEUMONIA" in r["path"]]
    farthest = max(pneumonia, key=lambda r: r["scope_distance"])
    assert farthest["label"] == "PNEUMONIA"  # the model finds it
    cutoff = farthest["scope_distance"] - 1e-3  # refuses it, and any film farther out
    refused = [r for r in records if r["scope_distance"] > cutoff]
    candidate = candidate_with_cutoff(tmp_path / "one refusal", cutoff)
    limits = verify.GateLimits(max_out_of_scope=len(refused) / len(records))
    report = verify.verify(REFERENCE_MODEL, [candidate], site_folder, limits=limits)
    judged = report["candidates"][0]
    assert report["passed"] and judged["recall"] == report["baseline"]["recall"]
    assert judged["out_of_scope"]["pneumonia"] == 1 and judged["changes"]["new false negative"] == 0
    assert farthest["path"] in [f["path"] for f in judged["refused"]]
    tighter = verify.GateLimits(max_out_of_scope=(len(refused) - 1) / len(records))
    with pytest.raises(verify.RecallRegressionError):
        verify.verify(REFERENCE_MODEL, [candidate], site_folder, limits=tighter)
