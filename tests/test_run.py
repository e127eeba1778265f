"""`edgexray run` (run.py): the stage table, resuming, a failed gate, where the data is."""

from __future__ import annotations

import hashlib
import json

import pytest
from run_support import fingerprint

from edgexray import __version__, artifacts
from edgexray.edge_runtime import metadata
from edgexray.errors import EdgexrayError
from edgexray.pipeline.train import TrainConfig
from edgexray.run import STAGES, RunConfig, find_data, stage_hashes


def _hashes_before_calibrate_was_a_stage(config: RunConfig) -> dict[str, str]:
    """The chain as runs recorded it when bundle also calibrated."""
    hashes, chain = {}, __version__
    for stage, settings in config.stage_settings().items():
        if stage == "calibrate":
            continue
        text = chain + stage + json.dumps(settings, sort_keys=True, default=list)
        chain = hashes[stage] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return hashes


def test_stage_hashes_of_earlier_runs_are_kept(tmp_path):
    for calibrate_on in (None, str(tmp_path / "site")):
        config = RunConfig(train=TrainConfig(data=str(tmp_path)), calibrate_on=calibrate_on)
        hashes = stage_hashes(config)
        assert hashes.pop("calibrate")
        assert hashes == _hashes_before_calibrate_was_a_stage(config)


def test_calibrating_elsewhere_changes_the_calibrate_and_bundle_hashes_only(tmp_path):
    train = TrainConfig(data=str(tmp_path))
    one = stage_hashes(RunConfig(train=train, calibrate_on="/site/a"))
    other = stage_hashes(RunConfig(train=train, calibrate_on="/site/b"))
    assert [stage for stage in one if one[stage] != other[stage]] == ["calibrate", "bundle"]


def test_retraining_removes_every_later_stages_outputs_and_keeps_the_model():
    later = {name.split("/")[0] for stage in STAGES[1:] for name in stage.outputs}
    assert set(artifacts.DERIVED) == later | {artifacts.RUN_REPORT}
    assert not set(artifacts.DERIVED) & set(STAGES[0].outputs)


def test_calibration_runs_before_bundling_and_after_the_gate():
    names = [stage.name for stage in STAGES]
    assert names.index("verify") < names.index("calibrate") < names.index("bundle")
    assert [stage.name for stage in STAGES if stage.distributed] == ["train", "prune", "quantize"]


def test_interrupted_stage_resumes_where_it_stopped(tiny_config, tmp_path, monkeypatch):
    from edgexray import run as workflow
    from edgexray.benchmarks.harness import BenchmarkConfig
    from edgexray.export import quantize as quantize_module
    from edgexray.export.quantize import QuantizeConfig
    from edgexray.pipeline.prune import PruneConfig
    from edgexray.pipeline.verify import GateLimits

    config = workflow.RunConfig(
        train=tiny_config,
        prune=PruneConfig(epochs=1),
        quantize=QuantizeConfig(qat_epochs=1, representative_size=16),
        methods=("float32", "int8", "pruned-int8"),
        benchmark=BenchmarkConfig(threads=(1,), warmup=1, runs=3, memory_images=1),
        targets=("android",),
        # A 1-epoch prune of a 3-epoch 32 px model loses much specificity and AUC, and the
        # scope statistics of a few synthetic films refuse some test films (a refused
        # pneumonia film counts as missed); resuming, not the gate, is under test here.
        gate=GateLimits(max_recall_drop=1.0, max_specificity_drop=1.0, max_auc_drop=1.0),
    )
    run_dir = tmp_path / "resumable run"

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(quantize_module, "quantize", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            workflow.run(config, run_dir, verbose=0)
    stages = json.loads((run_dir / "stages.json").read_text())
    assert list(stages) == ["train", "prune"]
    trained = fingerprint(run_dir)["model.keras"]

    events = []
    summary = workflow.run(
        config, run_dir, verbose=0, on_stage=lambda i, s, e: events.append((s, e))
    )
    assert ("train", "skip") in events and ("prune", "skip") in events
    assert ("quantize", "done") in events and ("bundle", "done") in events
    assert fingerprint(run_dir)["model.keras"] == trained
    assert summary["gate_passed"] is True
    assert (run_dir / "report.md").is_file()
    assert (run_dir / "bundles" / "android" / "SHA256SUMS").is_file()

    # Unchanged settings: nothing runs. --force quantize redoes it and what follows.
    events.clear()
    workflow.run(config, run_dir, verbose=0, on_stage=lambda i, s, e: events.append((s, e)))
    assert all(event == "skip" for _, event in events)
    events.clear()
    workflow.run(config, run_dir, ("quantize",), 0, lambda i, s, e: events.append((s, e)))
    later = ["verify", "benchmark", "calibrate", "bundle"]
    assert [s for s, e in events if e == "done"] == ["quantize", *later]

    # Damaged outputs are not trusted because their files exist: their stage runs again.
    def rerun_after(damage) -> list[str]:
        damage()
        events.clear()
        summary = workflow.run(
            config, run_dir, verbose=0, on_stage=lambda i, s, e: events.append((s, e))
        )
        assert summary["gate_passed"] is True
        return [s for s, e in events if e == "done"]

    sidecar = run_dir / "tflite" / "int8.json"
    assert rerun_after(sidecar.unlink) == ["quantize", *later]
    assert sidecar.is_file()
    int8 = run_dir / "tflite" / "int8.tflite"
    assert rerun_after(lambda: int8.write_bytes(int8.read_bytes()[:-64] + bytes(64))) == [
        "quantize",
        *later,
    ]
    assert json.loads(sidecar.read_text())["sha256"] == metadata.identity(int8)
    threshold = json.loads((run_dir / "metrics.json").read_text())["threshold"]
    model = run_dir / "model.keras"
    assert rerun_after(lambda: model.write_bytes(model.read_bytes()[:1000])) == [
        "train",
        "prune",
        "quantize",
        *later,
    ]
    assert json.loads((run_dir / "metrics.json").read_text())["threshold"] == threshold


def test_failed_gate_with_nothing_to_ship_exits_1_with_a_report(run_copy, tiny_config, monkeypatch):
    """Every stage but the gate is stubbed: the int8 candidate fails, so nothing is bundled,
    an earlier bundle is removed, and the report still says what happened."""
    from edgexray import run as workflow
    from edgexray.benchmarks import harness
    from edgexray.export import quantize
    from edgexray.pipeline import prune, train, verify

    int8 = {
        "method": "int8",
        "size_bytes": 2048,
        "gzip_bytes": 1024,
        "sparsity": 0.0,
        "threshold": 0.5,
        "val": {"recall": 0.97, "specificity": 0.9},
    }
    (run_copy / "quantize.json").write_text(json.dumps({"variants": {"int8": int8}}))
    failing = {
        "passed": False,
        "baseline": {"recall": 1.0},
        "max_recall_drop": 0.0,
        "candidates": [
            {
                "name": "int8",
                "model": "tflite/int8.tflite",
                "passed": False,
                "recall": 0.5,
                "changes": {"new false negative": 3},
            }
        ],
    }

    def gate(run_dir, limits):  # like verify_run: the report is written, then raised
        (run_dir / "verify.json").write_text(json.dumps(failing))
        raise verify.RecallRegressionError(failing)

    def stage_done(*args, **kwargs):
        return {"interrupted": False}

    for module, name in (
        (train, "train"),
        (prune, "prune"),
        (quantize, "quantize"),
        (harness, "benchmark"),
    ):
        monkeypatch.setattr(module, name, stage_done)
    monkeypatch.setattr(verify, "verify_run", gate)
    monkeypatch.setattr(verify, "table_lines", lambda report: [])  # the stub holds no metrics
    (run_copy / "bundles" / "rpi").mkdir(parents=True)  # an earlier run's bundle
    config = workflow.RunConfig(train=tiny_config, methods=("int8",))
    with pytest.raises(verify.RecallRegressionError):
        workflow.run(config, run_copy, verbose=0)
    assert not (run_copy / "bundles").exists()
    assert "**FAILED**" in (run_copy / "report.md").read_text()


def test_edgexray_data_naming_a_missing_folder_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    (tmp_path / "data" / "chest_xray").mkdir(parents=True)  # what it used to fall back to
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEXRAY_DATA", str(tmp_path / "no such data"))
    with pytest.raises(EdgexrayError, match="EDGEXRAY_DATA=.*no such data is not a folder"):
        find_data(None)
    monkeypatch.setenv("EDGEXRAY_DATA", str(tmp_path / "data" / "chest_xray"))
    assert find_data(None) == (tmp_path / "data" / "chest_xray").resolve()
