"""`edgexray calibrate`: the threshold rule, its coverage by simulation, and the command."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_xray_folder
from edge_support import run_blocked
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime import metadata
from edgexray.edge_runtime.classifier import Classifier
from edgexray.export.bundle import BundleConfig, make_bundle, write_runtime
from edgexray.pipeline import calibrate as cal
from edgexray.pipeline import evaluate, metrics, verify

runner = CliRunner()


# --- the rule on hand-made cases ---------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "misses", "films"),
    [(0.97, 0, 99), (0.95, 0, 59), (0.99, 0, 299), (0.97, 1, 157), (0.97, 3, 257)],
)
def test_films_needed_is_the_smallest_sample_that_can_show_the_target(target, misses, films):
    assert metrics.films_needed(target, 0.95, misses) == films
    assert metrics.misses_allowed(films, target, 0.95) == misses
    assert metrics.misses_allowed(films - 1, target, 0.95) == (misses - 1 if misses else None)


def test_threshold_is_the_lowest_pneumonia_score_when_no_miss_is_allowed():
    scores = np.linspace(0.2, 0.99, 99)
    labels = np.ones(99, dtype=int)
    assert cal.choose_threshold(labels, scores, 0.97, 0.95) == (0.2, cal.CONFIDENT, 0)
    # Two more films allow one miss: the second-lowest score.
    scores = np.r_[0.1, scores, 0.995]
    labels = np.ones(len(scores) + 56, dtype=int)
    scores = np.r_[scores, np.full(56, 0.9)]
    threshold, _, k = cal.choose_threshold(labels, scores, 0.97, 0.95)
    assert (threshold, k) == (0.2, 1)


def test_normal_films_do_not_move_the_threshold():
    pneumonia = np.linspace(0.3, 0.99, 120)
    labels = np.r_[np.ones(120), np.zeros(50)]
    low = cal.choose_threshold(labels, np.r_[pneumonia, np.full(50, 0.01)], 0.97, 0.95)
    high = cal.choose_threshold(labels, np.r_[pneumonia, np.full(50, 0.98)], 0.97, 0.95)
    assert low == high


def test_tied_scores_at_the_threshold_are_all_called_pneumonia():
    # int8 outputs: a handful of levels, most films tied.
    scores = np.r_[np.full(3, 40 / 256), np.full(150, 200 / 256), np.full(50, 255 / 256)]
    labels = np.ones(len(scores), dtype=int)
    threshold, _, k = cal.choose_threshold(labels, scores, 0.97, 0.95)
    assert k == 1 and threshold == 40 / 256  # the second-lowest score is one of the tied three
    assert np.sum(scores < threshold) == 0 <= k  # the tie is not split: nobody is missed


def test_no_pneumonia_film_is_not_enough_evidence():
    assert metrics.misses_allowed(0, 0.97, 0.95) is None
    with pytest.raises(cal.NotEnoughEvidence, match="0 pneumonia films"):
        cal.choose_threshold(np.zeros(5), np.linspace(0, 1, 5), 0.97, 0.95, True)


def test_all_equal_scores_give_that_score():
    labels = np.r_[np.ones(100), np.zeros(10)]
    threshold, method, _ = cal.choose_threshold(labels, np.full(110, 0.5), 0.97, 0.95)
    assert threshold == 0.5 and method == cal.CONFIDENT


def test_too_few_pneumonia_films_is_an_error_saying_how_many_are_needed():
    labels, scores = np.ones(98, dtype=int), np.linspace(0.1, 0.9, 98)
    with pytest.raises(cal.NotEnoughEvidence, match=r"98 pneumonia films .* at least 99"):
        cal.choose_threshold(labels, scores, 0.97, 0.95)
    threshold, method, k = cal.choose_threshold(labels, scores, 0.97, 0.95, True)
    assert method == cal.POINT_ESTIMATE and k is None
    assert threshold == metrics.threshold_for_recall(labels, scores, 0.97)


def test_rule_is_the_highest_threshold_whose_clopper_pearson_bound_meets_the_target():
    rng = np.random.default_rng(3)
    for n in (99, 140, 157, 230, 400):
        scores = np.round(rng.beta(5, 1, n) * 64) / 64  # coarse levels: many ties
        threshold, _, _ = cal.choose_threshold(np.ones(n), scores, 0.97, 0.95)
        passing = [
            t
            for t in np.unique(scores)
            if metrics.recall_lower_bound(int(np.sum(scores >= t)), n, 0.95) >= 0.97
        ]
        assert threshold == max(passing)


def test_clopper_pearson_lower_bound_matches_the_closed_form_without_misses():
    # With no miss the one-sided bound is (1 - confidence) ** (1 / n).
    assert metrics.recall_lower_bound(99, 99, 0.95) == pytest.approx(0.05 ** (1 / 99), abs=1e-9)
    assert metrics.recall_lower_bound(0, 10, 0.95) == 0.0


def test_predictive_values_follow_bayes_rule():
    values = metrics.predictive_values(0.9, 0.8, 0.1)
    assert values["ppv"] == pytest.approx(0.09 / (0.09 + 0.18))
    assert values["npv"] == pytest.approx(0.72 / (0.72 + 0.01))


# --- coverage by simulation ------------------------------------------------------------------


def _coverage(rule, n: int, sets: int, quantized: bool, seed: int) -> float:
    """Share of sampled calibration sets whose threshold truly reaches recall 0.97.

    Pneumonia scores are S = U ** (1/4) (most near 1, as for a good model), so the true
    recall at t is P(S >= t) = 1 - t**4; quantized to 1/256 steps like int8 outputs, the
    same formula holds at the grid points the thresholds fall on.
    """
    rng = np.random.default_rng(seed)
    scores = rng.random((sets, n)) ** 0.25
    if quantized:
        scores = np.floor(scores * 256) / 256
    labels = np.ones(n, dtype=int)
    thresholds = np.array([rule(labels, row) for row in scores])
    return float(np.mean(1.0 - thresholds**4 >= 0.97))


@pytest.mark.parametrize("quantized", [False, True])
def test_recall_target_holds_with_the_stated_confidence_over_resampled_sets(quantized):
    def confident(labels, scores):
        return cal.choose_threshold(labels, scores, 0.97, 0.95)[0]

    def empirical(labels, scores):
        return metrics.threshold_for_recall(labels, scores, 0.97)

    # 166 films allow one miss with exact coverage 0.961: close to 0.95, so an off-by-one
    # rule (coverage about 0.88) or a miscounted tie would fail.
    n, sets = 166, 4000
    coverage = _coverage(confident, n, sets, quantized, seed=11)
    assert coverage >= 0.95
    if not quantized:  # continuous scores: the exact coverage is 1 - P(Bin(n, 0.03) <= k)
        k = metrics.misses_allowed(n, 0.97, 0.95)
        exact = 1.0 - metrics.binomial_cdf(k, n, 0.03)
        assert abs(coverage - exact) < 3 * np.sqrt(exact * (1 - exact) / sets)
    # The plain empirical threshold holds the target only about half the time.
    assert _coverage(empirical, n, sets, quantized, seed=11) < 0.65


# --- cross-validation folds ---------------------------------------------------------------


def test_folds_keep_each_patient_together_and_share_out_pneumonia():
    paths = [f"P/person{i // 3}_bacteria_{i}.jpeg" for i in range(60)]
    paths += [f"N/IM-{i // 2:04d}-{i % 2 + 1:04d}.jpeg" for i in range(40)]
    labels = np.r_[np.ones(60), np.zeros(40)].astype(int)
    folds = cal.patient_folds(paths, labels, 5)
    by_patient = {}
    for path, fold in zip(paths, folds, strict=True):
        by_patient.setdefault(Path(path).name.split("_")[0][:10], set()).add(fold)
    assert all(len(f) == 1 for f in by_patient.values())
    assert [np.sum(labels[folds == f]) for f in range(5)] == [12] * 5
    assert np.array_equal(folds, cal.patient_folds(paths, labels, 5))  # repeatable


def test_cross_validation_calibrates_each_fold_on_the_others_only():
    rng = np.random.default_rng(5)
    paths = [f"person{i}_virus_{i}.jpeg" for i in range(300)]
    paths += [f"IM-{i:04d}-0001.jpeg" for i in range(100)]
    labels = np.r_[np.ones(300), np.zeros(100)].astype(int)
    scores = np.r_[rng.beta(6, 1, 300), rng.beta(1, 4, 100)]
    result = cal.cross_validate(paths, labels, scores, cal.CalibrateConfig())
    folds = cal.patient_folds(paths, labels, 5)
    predicted = np.zeros(400, dtype=bool)
    for fold, threshold in enumerate(result["thresholds"]):
        train = folds != fold
        assert threshold == cal.choose_threshold(labels[train], scores[train], 0.97, 0.95)[0]
        predicted[~train] = scores[~train] >= threshold
    assert result["misses"] == np.sum((labels == 1) & ~predicted)
    assert result["false_alarms"] == np.sum((labels == 0) & predicted)


def test_cross_validation_says_when_training_folds_are_too_small():
    paths = [f"person{i}_virus_{i}.jpeg" for i in range(110)] + ["IM-0001-0001.jpeg"]
    labels = np.r_[np.ones(110), 0].astype(int)
    result = cal.cross_validate(paths, labels, np.linspace(0, 1, 111), cal.CalibrateConfig())
    assert result["available"] is False and "too few pneumonia films" in result["reason"]
    few = cal.cross_validate(paths[:3], labels[:3], np.ones(3), cal.CalibrateConfig())
    assert few["available"] is False and "3 patients cannot fill 5 folds" in few["reason"]


# --- the command on a tiny model -------------------------------------------------------------

# The tiny folder has 40 pneumonia films: enough for recall 0.9 at 90% (22 needed).
SMALL_TARGET = ["--target-recall", "0.9", "--confidence", "0.9"]


def _error_lines(result) -> list[str]:
    """The `error:` lines on stderr (INFO and WARNING progress lines may precede them)."""
    assert "Traceback" not in result.output
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _snapshot(model: Path) -> dict:
    sidecar = model.with_suffix(".json")
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (model, sidecar)}


@pytest.fixture(scope="module")
def calibrated(tiny_tflite, xray_folder, tmp_path_factory) -> Path:
    source = tiny_tflite["int8"]
    before = _snapshot(source)
    out = tmp_path_factory.mktemp("calibrated") / "site out"
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(source),
            "--data",
            str(xray_folder),
            "--out",
            str(out),
            *SMALL_TARGET,
            "--prevalence",
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert _snapshot(source) == before  # the source model and sidecar are never modified
    return out / source.name


def test_calibrate_writes_the_same_model_with_a_new_threshold_and_its_record(
    calibrated, tiny_tflite, xray_folder
):
    source = tiny_tflite["int8"]
    # Only the metadata is rewritten: the flatbuffer keeps every byte, the model its identity.
    size = metadata.read(source).flatbuffer_size
    assert calibrated.read_bytes()[:size] == source.read_bytes()[:size]
    assert metadata.read(calibrated).flatbuffer_size == size
    sidecar = json.loads(calibrated.with_suffix(".json").read_text())
    assert json.loads(metadata.read(calibrated).sidecar_bytes) == sidecar  # inside, and the copy
    old = json.loads(source.with_suffix(".json").read_text())
    block = sidecar["calibration"]
    assert sidecar["sha256"] == old["sha256"] == metadata.identity(calibrated)
    assert (
        block["source_sidecar_sha256"]
        == hashlib.sha256(metadata.read(source).sidecar_bytes).hexdigest()
    )
    assert sidecar["threshold"] == block["threshold"] != old["threshold"]
    assert block["source_threshold"] == old["threshold"]
    assert block["method"] == cal.CONFIDENT and block["guarantee"] is True
    assert (block["target_recall"], block["confidence"]) == (0.9, 0.9)
    assert block["sample"]["n"] == 80
    assert (block["sample"]["pneumonia"], block["sample"]["normal"]) == (40, 40)
    root, paths, _ = cal.site_films(xray_folder)
    assert block["sample"]["files_sha256"] == cal.file_list_sha256(root, paths)
    assert block["recall_lower_bound"] >= 0.9
    assert block["cross_validation"]["available"] and block["cross_validation"]["folds"] == 5
    assert block["empirical"]["cross_validation"]["methods"] == [cal.POINT_ESTIMATE]
    assert set(block["prevalence"]) == {"prevalence", "ppv", "npv", "cautious"}
    low, high = block["expected_specificity_ci"]
    assert low <= block["expected_specificity"] <= high
    assert {
        k: v for k, v in sidecar.items() if k not in ("threshold", "target_recall", "calibration")
    } == {k: v for k, v in old.items() if k not in ("threshold", "target_recall")}


def test_every_consumer_honours_the_calibrated_threshold(calibrated, xray_folder, tmp_path):
    from edgexray.benchmarks.harness import _variant

    threshold = json.loads(calibrated.with_suffix(".json").read_text())["threshold"]
    assert Classifier(calibrated).threshold == threshold
    assert evaluate.evaluate(calibrated, xray_folder)["threshold"] == threshold
    report = verify.verify(calibrated, [calibrated], xray_folder)
    assert report["candidates"][0]["threshold"] == threshold
    assert _variant(calibrated).model.threshold == threshold
    film = sorted((xray_folder / "PNEUMONIA").iterdir())[0]
    result = runner.invoke(app, ["predict", "--model", str(calibrated), str(film)])
    assert json.loads(result.stdout)["threshold"] == threshold
    # The device script alone (no edgexray, no TensorFlow) accepts the calibration block.
    device = tmp_path / "device"
    write_runtime(device)
    script = run_blocked(
        [sys.executable, str(device / "infer.py"), "--model", str(calibrated), str(film)], tmp_path
    )
    assert script.returncode == 0, script.stderr
    assert json.loads(script.stdout)["threshold"] == threshold


@pytest.mark.parametrize("target", ["rpi", "android"])
def test_bundle_readme_says_the_model_was_calibrated_and_on_what(calibrated, tmp_path, target):
    out = tmp_path / f"{target} bundle"
    make_bundle(BundleConfig(model=str(calibrated), target=target, out=str(out)))
    readme = (out / "README.md").read_text()
    block = json.loads(calibrated.with_suffix(".json").read_text())["calibration"]
    assert "Calibrated at a site" in readme and block["sample"]["files_sha256"] in readme
    assert f"**{block['threshold']}**" in readme and "on validation)" not in readme


def test_uncalibrated_bundle_readme_keeps_the_validation_wording(tiny_tflite, tmp_path):
    out = tmp_path / "plain bundle"
    make_bundle(BundleConfig(model=str(tiny_tflite["int8"]), target="rpi", out=str(out)))
    readme = (out / "README.md").read_text()
    assert "on validation)" in readme and "Calibrated" not in readme


def test_too_few_films_exits_2_and_the_point_estimate_is_labelled(
    tiny_tflite, xray_folder, tmp_path
):
    args = ["calibrate", "--model", str(tiny_tflite["int8"]), "--data", str(xray_folder)]
    refused = runner.invoke(app, [*args, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2
    assert _error_lines(refused) == [
        "error: 40 pneumonia films cannot show recall >= 0.97 with 95% confidence: that needs "
        "at least 99 (with no miss); add pneumonia films or pass --allow-point-estimate"
    ]
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "point"
    result = runner.invoke(app, [*args, "--out", str(out), "--allow-point-estimate"])
    assert result.exit_code == 0, result.output
    assert "POINT ESTIMATE, no confidence guarantee" in result.stdout
    sidecar = json.loads((out / tiny_tflite["int8"].name).with_suffix(".json").read_text())
    assert sidecar["calibration"]["method"] == cal.POINT_ESTIMATE
    assert sidecar["calibration"]["guarantee"] is False
    make_bundle(BundleConfig(model=str(out / "int8.tflite"), target="rpi", out=str(tmp_path / "b")))
    assert "POINT ESTIMATE" in (tmp_path / "b" / "README.md").read_text()


def _bad_site(tmp_path: Path, kind: str) -> Path:
    site = tmp_path / "bad site"
    if kind == "empty":
        site.mkdir()
    elif kind == "one class":
        make_xray_folder(site, per_class=4)
        shutil.rmtree(site / "PNEUMONIA")
    elif kind == "non-images":
        for label in ("NORMAL", "PNEUMONIA"):
            (site / label).mkdir(parents=True)
            (site / label / "a.jpeg").write_text("not a film")
    return site


@pytest.mark.parametrize(
    ("site", "options", "message"),
    [
        ("empty", [], "no NORMAL/ and PNEUMONIA/"),
        ("one class", [], "no PNEUMONIA/ folder"),
        ("non-images", [], "holds no readable image"),
        ("good", ["--target-recall", "1.5"], "target recall must be in (0, 1)"),
        ("good", ["--confidence", "1"], "confidence must be in (0, 1)"),
        ("good", ["--confidence", "0"], "confidence must be in (0, 1)"),
        ("good", ["--prevalence", "1.5"], "prevalence must be in (0, 1)"),
        ("good", ["--folds", "1"], "folds must be at least 2"),
        ("no sidecar", [], "carries no edgexray metadata and has no sidecar"),
        ("own folder", [], "is the model's own folder"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tiny_tflite, xray_folder, tmp_path, site, options, message
):
    source = tiny_tflite["int8"]
    before = _snapshot(source)
    model, out = source, tmp_path / "out"
    if site == "no sidecar":  # a bare flatbuffer: no metadata inside, no .json beside
        model = tmp_path / "lonely.tflite"
        model.write_bytes(source.read_bytes()[: metadata.read(source).flatbuffer_size])
    if site == "own folder":
        out = source.parent
    data = (
        xray_folder if site in ("good", "no sidecar", "own folder") else _bad_site(tmp_path, site)
    )
    result = runner.invoke(
        app, ["calibrate", "--model", str(model), "--data", str(data), "--out", str(out), *options]
    )
    assert result.exit_code == 2, result.output
    lines = _error_lines(result)
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert _snapshot(source) == before


# --- edgexray run --calibrate-on ---------------------------------------------------------------


@pytest.fixture(scope="module")
def other_site(tmp_path_factory) -> Path:
    """A second hospital: other patients, 100 films per class (enough for 0.97 at 95%)."""
    root = tmp_path_factory.mktemp("other") / "other site"
    return make_xray_folder(root, per_class=100, seed=7, first_patient=5000)


@pytest.fixture
def run_with_int8(tiny_run, tiny_tflite, tmp_path) -> Path:
    run_dir = tmp_path / "my run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "tflite").mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(tiny_tflite["int8"].with_suffix(suffix), run_dir / "tflite")
    return run_dir


def test_run_model_is_measured_on_test_films_it_was_not_calibrated_on(run_with_int8, other_site):
    model = run_with_int8 / "tflite" / "int8.tflite"
    report = cal.calibrate_run_model(run_with_int8, model, other_site, cal.CalibrateConfig())
    test = report["test"]
    assert test["left_out_as_calibration_films"] == 0
    assert test["before"]["threshold"] == report["calibration"]["source_threshold"]
    assert test["after"]["threshold"] == report["calibration"]["threshold"]
    assert json.loads((run_with_int8 / "calibration.json").read_text()) == report
    assert metadata.identity(Path(report["calibrated_model"])) == metadata.identity(model)


def test_run_never_reports_on_its_calibration_films(run_with_int8, xray_folder):
    # The run's own data folder holds its test split: every test film is a calibration film.
    model = run_with_int8 / "tflite" / "int8.tflite"
    config = cal.CalibrateConfig(target_recall=0.9, confidence=0.9)
    report = cal.calibrate_run_model(run_with_int8, model, xray_folder, config)
    test = report["test"]
    assert test["left_out_as_calibration_films"] == test["films"] > 0
    assert "after" not in test and "besides the calibration films" in test["reason"]


def _stub_stages(monkeypatch, run_dir: Path) -> list[str]:
    """Every stage but calibrate and bundle is stubbed; the int8 candidate passes the gate."""
    from edgexray.benchmarks import harness
    from edgexray.export import quantize
    from edgexray.pipeline import prune, train

    int8 = {
        "method": "int8",
        "size_bytes": 2048,
        "gzip_bytes": 1024,
        "sparsity": 0.0,
        "threshold": 0.5,
        "val": {"recall": 0.97, "specificity": 0.9},
    }
    (run_dir / "quantize.json").write_text(json.dumps({"variants": {"int8": int8}}))
    candidate = {"name": "int8", "model": str(run_dir / "tflite/int8.tflite"), "passed": True}
    passing = {"passed": True, "candidates": [candidate]}
    called = []

    def stage_done(*args, **kwargs):
        called.append("stage")
        return {"interrupted": False}

    for module, name in (
        (train, "train"),
        (prune, "prune"),
        (quantize, "quantize"),
        (harness, "benchmark"),
    ):
        monkeypatch.setattr(module, name, stage_done)

    def verify_passing(run_dir, limits):
        (run_dir / "verify.json").write_text(json.dumps(passing))
        return passing

    monkeypatch.setattr(verify, "verify_run", verify_passing)
    monkeypatch.setattr(verify, "table_lines", lambda report: [])  # the stub holds no metrics
    return called


def test_run_bundles_the_calibrated_model_and_reports_before_and_after(
    run_with_int8, tiny_config, other_site, monkeypatch
):
    from edgexray import run as workflow

    _stub_stages(monkeypatch, run_with_int8)
    config = workflow.RunConfig(
        train=tiny_config, methods=("int8",), targets=("rpi",), calibrate_on=str(other_site)
    )
    summary = workflow.run(config, run_with_int8, verbose=0)
    assert summary["selected"]["calibrated_model"] == "calibrated/int8.tflite"
    calibrated = json.loads((run_with_int8 / "calibrated" / "int8.json").read_text())
    bundled = json.loads((run_with_int8 / "bundles" / "rpi" / "int8.json").read_text())
    assert bundled == calibrated and "calibration" in bundled
    report = (run_with_int8 / "report.md").read_text()
    assert "## Calibration at the site" in report and "test split, after" in report
    # Dropping --calibrate-on ships the plain model again and forgets the calibration.
    plain = workflow.RunConfig(train=tiny_config, methods=("int8",), targets=("rpi",))
    workflow.run(plain, run_with_int8, force=("bundle",), verbose=0)
    assert "calibration" not in json.loads((run_with_int8 / "bundles/rpi/int8.json").read_text())
    assert not (run_with_int8 / "calibration.json").exists()
    assert "Calibration at the site" not in (run_with_int8 / "report.md").read_text()


def test_run_refuses_a_thin_site_sample_before_training(
    run_with_int8, tiny_config, xray_folder, monkeypatch
):
    from edgexray import run as workflow

    called = _stub_stages(monkeypatch, run_with_int8)
    config = workflow.RunConfig(train=tiny_config, calibrate_on=str(xray_folder))
    with pytest.raises(cal.NotEnoughEvidence, match="needs at least 99"):
        workflow.run(config, run_with_int8, verbose=0)
    assert called == []


def test_calibrate_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from edgexray.cli import app\n"
        "assert CliRunner().invoke(app, ['calibrate', '--help']).exit_code == 0\n"
        "assert not [m for m in ('tensorflow', 'tf_keras') if m in sys.modules]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_calibrate_out_holding_another_model_of_that_name_is_refused(
    calibrated, tiny_tflite, xray_folder, tmp_path
):
    args = [
        "calibrate",
        "--model",
        str(tiny_tflite["int8"]),
        "--data",
        str(xray_folder),
        *SMALL_TARGET,
    ]
    out = tmp_path / "site out"
    out.mkdir()
    (out / "int8.tflite").write_bytes(b"the site's own model")
    (out / "int8.json").write_text('{"mine": true}\n')
    refused = runner.invoke(app, [*args, "--out", str(out)])
    assert refused.exit_code == 2 and len(_error_lines(refused)) == 1
    assert "is another model" in _error_lines(refused)[0]
    assert (out / "int8.tflite").read_bytes() == b"the site's own model"
    (out / "int8.tflite").unlink()
    refused = runner.invoke(app, [*args, "--out", str(out)])
    assert refused.exit_code == 2 and "not a sidecar of this model" in _error_lines(refused)[0]
    assert (out / "int8.json").read_text() == '{"mine": true}\n'
    # The same model with an earlier calibration's sidecar: calibrating again is fine.
    again = runner.invoke(app, [*args, "--out", str(calibrated.parent)])
    assert again.exit_code == 0, again.output


def test_calibrate_out_naming_a_file_is_one_clear_line(tiny_tflite, xray_folder, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(tiny_tflite["int8"]),
            "--data",
            str(xray_folder),
            "--out",
            str(afile),
            *SMALL_TARGET,
        ],
    )
    assert result.exit_code == 2
    message = f"error: --out {afile} is a file, not a folder: choose a folder"
    assert _error_lines(result) == [message]
    assert afile.read_text() == "mine\n"


def test_run_recorded_before_calibrate_was_a_stage_resumes_without_rerunning(
    run_with_int8, tiny_config, other_site, monkeypatch
):
    from edgexray import run as workflow

    called = _stub_stages(monkeypatch, run_with_int8)
    for name in ("pruned.keras", "prune.json", "benchmark/benchmark.json"):  # the stubs' outputs
        (run_with_int8 / name).parent.mkdir(exist_ok=True)
        (run_with_int8 / name).write_text("{}")
    config = workflow.RunConfig(
        train=tiny_config, methods=("int8",), targets=("rpi",), calibrate_on=str(other_site)
    )
    workflow.run(config, run_with_int8, verbose=0)
    # The layout of stages.json before: bundle's record also held the calibration files.
    record_path = run_with_int8 / "stages.json"
    record = json.loads(record_path.read_text())
    record["bundle"]["outputs"].update(record.pop("calibrate")["outputs"])
    assert "calibration.json" in record["bundle"]["outputs"]
    record_path.write_text(json.dumps(record))
    called.clear()
    events = []
    workflow.run(config, run_with_int8, verbose=0, on_stage=lambda *e: events.append(e[1:]))
    assert called == [] and all(event == "skip" for _, event in events)
    assert [stage for stage, _ in events] == list(workflow.STAGE_NAMES)


@pytest.mark.parametrize("case", ["more folds than patients", "one patient"])
def test_calibrate_without_enough_patients_for_its_folds_still_summarizes(
    tiny_tflite, xray_folder, tmp_path, case
):
    site, extra = xray_folder, ["--folds", "1000"]
    if case == "one patient":  # PACS-style names: IM-0001-NNNN, all one patient
        site, extra = tmp_path / "pacs site", []
        for label in ("NORMAL", "PNEUMONIA"):
            (site / label).mkdir(parents=True)
            for i, film in enumerate(sorted((xray_folder / label).iterdir())):
                number = i + 1000 * (label == "NORMAL")
                shutil.copyfile(film, site / label / f"IM-0001-{number:04d}.jpeg")
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(tiny_tflite["int8"]),
            "--data",
            str(site),
            "--out",
            str(tmp_path / "out"),
            *SMALL_TARGET,
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "fold CV: not available" in result.stdout


def test_films_whose_names_name_no_patient_are_not_called_patient_grouped(
    tiny_tflite, xray_folder, tmp_path
):
    site = tmp_path / "scan site"
    rows = ["file,patient"]
    for label in ("NORMAL", "PNEUMONIA"):
        (site / label).mkdir(parents=True)
        for i, film in enumerate(sorted((xray_folder / label).iterdir())):
            name = f"scan_{label}_{i:03d}.jpeg"
            shutil.copyfile(film, site / label / name)
            rows.append(f"{label}/{name},{label}-{i // 2}")
    args = ["calibrate", "--model", str(tiny_tflite["int8"]), "--data", str(site), *SMALL_TARGET]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "NOT patient-grouped" in result.stdout and "own patient" in result.stdout
    sidecar = json.loads((tmp_path / "out" / "int8.json").read_text())
    assert sidecar["calibration"]["sample"]["patients"] == 80
    (tmp_path / "patients.csv").write_text("\n".join(rows) + "\n")
    patient_map = ["--patients", str(tmp_path / "patients.csv")]
    mapped = runner.invoke(app, [*args, "--out", str(tmp_path / "mapped"), *patient_map])
    assert mapped.exit_code == 0, mapped.output
    assert "(patient-grouped, films unseen" in mapped.stdout
    sidecar = json.loads((tmp_path / "mapped" / "int8.json").read_text())
    assert sidecar["calibration"]["sample"]["patients"] == 40
    (tmp_path / "patients.csv").write_text("\n".join(rows[:-1]) + "\n")
    short = runner.invoke(app, [*args, "--out", str(tmp_path / "short"), *patient_map])
    assert short.exit_code == 2 and "names no patient for 1 film" in _error_lines(short)[0]


def test_the_same_film_in_both_classes_is_warned_about(tiny_tflite, xray_folder, tmp_path):
    site = tmp_path / "site with slips"
    shutil.copytree(xray_folder, site)
    for film in sorted((site / "NORMAL").iterdir())[:2]:
        shutil.copyfile(film, site / "PNEUMONIA" / f"copy of {film.name}")
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(tiny_tflite["int8"]),
            "--data",
            str(site),
            "--out",
            str(tmp_path / "out"),
            *SMALL_TARGET,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 film(s) are in both NORMAL/ and PNEUMONIA/" in result.stdout
    sidecar = json.loads((tmp_path / "out" / "int8.json").read_text())
    assert sidecar["calibration"]["sample"]["in_both_classes"] == 2
