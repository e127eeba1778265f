"""The files edgexray writes (artifacts.py): whole, locked, free of code, never a user's.

edgexray removes or replaces only the files it wrote: a retrain, `train --out`, `calibrate
--out`, `benchmark --out` and `bundle --zip` never take a user's file with them."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.cli import app
from edgexray.errors import EdgexrayError
from edgexray.export.bundle import BundleConfig, make_bundle

runner = CliRunner()


@pytest.fixture
def used_run(tiny_run, tiny_tflite, tmp_path) -> Path:
    """A copy of the tiny run with what later stages write, and the user's files among it."""
    run_dir = tmp_path / "used run"
    shutil.copytree(tiny_run, run_dir)
    tflite = run_dir / artifacts.TFLITE_DIR
    tflite.mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copyfile(tiny_tflite["int8"].with_suffix(suffix), tflite / f"int8{suffix}")
    (tflite / "my notes.txt").write_text("mine\n")
    artifacts.write_json(run_dir / artifacts.VERIFY_REPORT, {"passed": True})
    bench = run_dir / artifacts.BENCHMARK_DIR
    artifacts.write_json(bench / "benchmark.json", {"plots": ["latency.png"]})
    (bench / "benchmark.md").write_text("table\n")
    (bench / "latency.png").write_bytes(b"png")
    (bench / "my slides.md").write_text("mine\n")
    bundle = run_dir / artifacts.BUNDLES_DIR / "rpi"
    make_bundle(BundleConfig(str(tflite / "int8.tflite"), "rpi", str(bundle), zip=True))
    (bundle / "results.jsonl").write_text('{"path": "a film"}\n')
    (bundle / ".venv" / "bin").mkdir(parents=True)
    (bundle / ".venv" / "bin" / "python").write_text("#!/bin/sh\n")
    # A record made before bundles were told apart from their users: it lists results.jsonl.
    outputs = {"bundles/rpi/results.jsonl": "0", "bundles/rpi/infer.py": "0", "verify.json": "0"}
    stages = (
        json.loads((run_dir / artifacts.STAGE_RECORD).read_text())
        if (run_dir / artifacts.STAGE_RECORD).is_file()
        else {}
    )
    stages["bundle"] = {"hash": "x", "outputs": outputs}
    artifacts.write_json(run_dir / artifacts.STAGE_RECORD, stages)
    return run_dir


def test_a_retrain_removes_only_what_edgexray_wrote(used_run, tiny_tflite):
    removed = artifacts.remove_derived(used_run)
    bundle = used_run / artifacts.BUNDLES_DIR / "rpi"
    assert (bundle / "results.jsonl").read_text() == '{"path": "a film"}\n'
    assert (bundle / ".venv" / "bin" / "python").is_file()
    assert (used_run / "tflite" / "my notes.txt").is_file()
    assert (used_run / "benchmark" / "my slides.md").is_file()
    assert sorted(p.name for p in (used_run / "tflite").iterdir()) == ["my notes.txt"]
    assert sorted(p.name for p in (used_run / "benchmark").iterdir()) == ["my slides.md"]
    assert not (bundle / "infer.py").exists() and not (used_run / "bundles" / "rpi.zip").exists()
    assert "verify.json" in removed and not (used_run / "verify.json").exists()
    assert (used_run / artifacts.MODEL).is_file() and (used_run / artifacts.MANIFEST).is_file()
    # The emptied bundle folder is still edgexray's: the next bundle goes there, keeping yours.
    result = make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(bundle)))
    assert sorted(result["kept"]) == [".venv", "results.jsonl"]
    assert (bundle / "infer.py").is_file()


def test_train_refuses_a_folder_that_is_not_a_run(xray_folder, tmp_path):
    folder = tmp_path / "my project"
    (folder / "tflite").mkdir(parents=True)
    (folder / "tflite" / "mine.tflite").write_bytes(b"mine")
    (folder / "report.md").write_text("my report\n")
    (folder / "config.json").write_text('{"mine": true}\n')
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    result = runner.invoke(
        app, ["train", "--data", str(xray_folder), "--out", str(folder), "--epochs", "1"]
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "not an edgexray run" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert (folder / "config.json").read_text() == '{"mine": true}\n'


def test_train_accepts_a_new_or_empty_folder_or_a_run(tiny_run, tmp_path):
    artifacts.require_run_folder(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    artifacts.require_run_folder(tmp_path / "empty")
    artifacts.require_run_folder(tiny_run)


def test_bundle_zip_never_replaces_a_users_zip(tiny_tflite, tmp_path):
    out = tmp_path / "rpi bundle"
    theirs = tmp_path / "rpi bundle.zip"
    theirs.write_bytes(b"the user's own archive")
    config = BundleConfig(str(tiny_tflite["int8"]), "rpi", str(out), zip=True)
    with pytest.raises(EdgexrayError, match="is not an earlier edgexray bundle"):
        make_bundle(config)
    assert theirs.read_bytes() == b"the user's own archive" and not out.exists()
    theirs.unlink()
    first = make_bundle(config)["zip"].read_bytes()
    assert make_bundle(config)["zip"].is_file() and first  # its own zip is replaced


def test_benchmark_out_holding_the_users_report_is_refused(tiny_tflite, xray_folder, tmp_path):
    out = tmp_path / "my results"
    out.mkdir()
    (out / "benchmark.md").write_text("my own notes\n")
    result = runner.invoke(
        app,
        [
            "benchmark",
            str(tiny_tflite["int8"]),
            "--data",
            str(xray_folder),
            "--out",
            str(out),
            "--runs",
            "2",
            "--warmup",
            "0",
            "--threads",
            "1",
        ],
    )
    assert result.exit_code == 2
    assert "holds benchmark.md that no edgexray benchmark wrote" in result.stderr
    assert (out / "benchmark.md").read_text() == "my own notes\n"


# The one reader of pickles: the Lite0 ImageNet checkpoint (a legacy PyTorch file), through
# an Unpickler whose find_class refuses every global but four (its tests, in
# tests/pipeline/backbones/test_torch_checkpoint.py, feed it os.system, eval and a payload
# in place of the magic number).
RESTRICTED_UNPICKLER = Path("pipeline/backbones/torch_checkpoint.py")


def test_nothing_reads_pickles_or_evaluates_strings():
    package = Path(__file__).resolve().parents[1] / "edgexray"
    for path in package.rglob("*.py"):
        source = path.read_text()
        restricted = path.relative_to(package) == RESTRICTED_UNPICKLER
        for forbidden in ("import pickle", "pickle.load", "eval(", "exec(", "safe_mode=False"):
            if not (restricted and forbidden == "import pickle"):
                assert forbidden not in source, f"{path}: {forbidden}"
    source = (package / RESTRICTED_UNPICKLER).read_text()
    assert "(pickle.Unpickler):" in source and "def find_class(" in source


def test_keras_models_with_code_are_refused(tmp_path):
    from edgexray import artifacts
    from edgexray.compat import keras
    from edgexray.errors import EdgexrayError

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(EdgexrayError, match="cannot load"):
        artifacts.load_keras(tmp_path / "lambda.keras")


def test_retraining_removes_what_was_made_from_the_old_model(run_copy, tiny_config):
    from edgexray.pipeline.train import train

    (run_copy / "pruned.keras").write_bytes(b"old")
    (run_copy / "bundles" / "rpi").mkdir(parents=True)
    train(tiny_config, run_copy, verbose=0)
    assert not (run_copy / "tflite").exists()
    assert not (run_copy / "pruned.keras").exists() and not (run_copy / "bundles").exists()
    assert (run_copy / "model.keras").is_file()


def test_write_errors_name_the_file_not_its_temporary(tmp_path):
    target = tmp_path / "metrics.json"

    def disk_full(temporary: Path) -> None:
        raise OSError(28, "No space left on device", str(temporary))

    with pytest.raises(OSError) as failure:
        artifacts.atomic_write(target, disk_full)
    assert failure.value.filename == str(target) and failure.value.errno == 28
    assert list(tmp_path.iterdir()) == []


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
