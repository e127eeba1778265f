"""Bad input to every command: one error line, its exit code, nothing in a run damaged."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from run_support import fingerprint
from sidecar_support import bare_flatbuffer, put_sidecar, sidecar_inside, with_graph_changed
from typer.testing import CliRunner

from edgexray.cli import app

runner = CliRunner()


def assert_clean_failure(args: list[str], code: int = 2) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    output = result.output
    assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{output}"
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.fixture
def image(xray_folder) -> Path:
    return next((xray_folder / "PNEUMONIA").iterdir())


def _commands_on_run(run_dir: Path, model: Path, image: Path, data: Path, out: Path):
    return {
        "prune": ["prune", run_dir],
        "quantize": ["quantize", run_dir, "--method", "int8"],
        "evaluate": ["evaluate", "--model", model, "--data", data],
        "verify": ["verify", run_dir],
        "benchmark": ["benchmark", model, "--data", data, "--runs", "3", "--threads", "1"],
        "predict": ["predict", "--model", model, image],
        "bundle": ["bundle", "--model", model, "--target", "rpi", "--out", out],
    }


@pytest.mark.parametrize(
    "command", ["prune", "quantize", "evaluate", "verify", "benchmark", "predict", "bundle"]
)
def test_nonexistent_paths_exit_2(command, tmp_path, xray_folder, image):
    missing = tmp_path / "no such thing"
    args = _commands_on_run(missing, missing / "m.tflite", image, xray_folder, tmp_path / "out")
    assert_clean_failure(args[command])


def test_train_and_run_on_missing_data_exit_2_and_leave_no_run_dir(tmp_path):
    for command in ("train", "run"):
        message = assert_clean_failure(
            [command, "--data", tmp_path / "nowhere", "--out", tmp_path / "r"]
        )
        assert "not found" in message
        assert not (tmp_path / "r").exists()


def test_run_without_any_data_says_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data/chest_xray and no ../shared/data here
    monkeypatch.delenv("EDGEXRAY_DATA", raising=False)
    message = assert_clean_failure(["run", "--out", tmp_path / "r"])
    assert "edgexray data download" in message  # the one step that gets the public set


def test_a_file_where_a_folder_is_expected_exits_2(tmp_path, image, tiny_tflite):
    assert_clean_failure(["train", "--data", image, "--out", tmp_path / "r"])
    assert_clean_failure(["evaluate", "--model", tiny_tflite["int8"], "--data", image])
    assert_clean_failure(["prune", image])
    assert_clean_failure(["train", "--data", image.parent.parent, "--out", image / "run"])


def test_empty_folders_exit_2(tmp_path, tiny_tflite):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_failure(["train", "--data", empty, "--out", tmp_path / "r"])
    assert_clean_failure(["evaluate", "--model", tiny_tflite["int8"], "--data", empty])
    for label in ("NORMAL", "PNEUMONIA"):
        (empty / label).mkdir()
    assert_clean_failure(["train", "--data", empty, "--out", tmp_path / "r"])


def test_class_folder_with_only_corrupt_images_exits_2(tmp_path, xray_folder):
    data = tmp_path / "data"
    shutil.copytree(xray_folder, data)
    for path in (data / "NORMAL").iterdir():
        path.write_bytes(path.read_bytes()[:100])
    message = assert_clean_failure(["train", "--data", data, "--out", tmp_path / "r"])
    assert "NORMAL" in message and "no readable image" in message


def _truncate_keeping_sidecar_valid(model: Path) -> None:
    model.write_bytes(model.read_bytes()[:2000])
    sidecar_path = model.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    sidecar["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    sidecar_path.write_text(json.dumps(sidecar))


@pytest.mark.parametrize(
    "damage", ["truncated model", "sha256 mismatch", "sidecar missing fields", "no metadata"]
)
def test_damaged_models_exit_2_and_leave_the_run_alone(damage, run_copy, image, xray_folder):
    model = run_copy / "tflite" / "int8.tflite"
    sidecar = model.with_suffix(".json")
    if damage == "truncated model":
        _truncate_keeping_sidecar_valid(model)
    elif damage == "sha256 mismatch":
        model.write_bytes(with_graph_changed(model.read_bytes()))
    elif damage == "sidecar missing fields":
        put_sidecar(model, {"labels": ["NORMAL", "PNEUMONIA"]})
    else:  # a bare flatbuffer, and no .json beside it
        model.write_bytes(bare_flatbuffer(model))
        sidecar.unlink()
    before = fingerprint(run_copy)
    commands = _commands_on_run(run_copy, model, image, xray_folder, run_copy.parent / "bundle")
    for name in ("evaluate", "predict", "bundle", "benchmark"):
        assert_clean_failure(commands[name])
    assert_clean_failure(
        [
            "verify",
            "--baseline",
            run_copy / "model.keras",
            "--candidate",
            model,
            "--data",
            xray_folder,
        ]
    )
    assert fingerprint(run_copy) == before
    assert not (run_copy.parent / "bundle").exists()


def test_bad_stage_options_leave_the_run_alone(run_copy):
    before = fingerprint(run_copy)
    assert_clean_failure(["prune", run_copy, "--sparsity", "1.5"])
    assert_clean_failure(["quantize", run_copy, "--method", "int4"])
    assert_clean_failure(["quantize", run_copy, "--method", "pqat"])  # needs prune first
    assert fingerprint(run_copy) == before


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder nothing can be written into, even as root (as CI runs)."""
    if os.geteuid() == 0:
        return Path("/sys/edgexray-read-only-test")  # sysfs refuses new entries to root too
    folder = tmp_path / "read only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_read_only_output_folder_exits_2(tmp_path, xray_folder, tiny_tflite):
    read_only = _read_only_folder(tmp_path)
    assert_clean_failure(["train", "--data", xray_folder, "--out", read_only / "run"])
    assert_clean_failure(
        ["bundle", "--model", tiny_tflite["int8"], "--target", "android", "--out", read_only / "b"]
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("threshold", "abc"),
        ("threshold", float("nan")),
        ("threshold", 2.0),
        ("labels", ["PNEUMONIA", "NORMAL"]),  # swapped: would call pneumonia normal
        ("labels", ["NORMAL"]),
        ("input.height", "abc"),
        ("input.normalization", "clahe"),
    ],
)
def test_sidecar_with_bad_values_exits_2(field, value, run_copy, image, xray_folder):
    model = run_copy / "tflite" / "int8.tflite"
    sidecar = sidecar_inside(model)
    if field.startswith("input."):
        sidecar["input"][field.split(".")[1]] = value
    else:
        sidecar[field] = value
    put_sidecar(model, sidecar)
    for command in (
        ["predict", "--model", model, image],
        ["evaluate", "--model", model, "--data", xray_folder],
    ):
        assert_clean_failure(command)


def _deeply_nested(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def test_deeply_nested_json_sidecar_or_config_exits_2(run_copy, xray_folder, tmp_path):
    """json recurses once per level: a hostile file must not end in a RecursionError."""
    config = tmp_path / "nested.json"
    config.write_text('{"data": ' + _deeply_nested() + "}")
    assert_clean_failure(["train", "--config", config, "--out", tmp_path / "r"])
    assert not (tmp_path / "r").exists()
    (run_copy / "tflite" / "int8.json").write_text(_deeply_nested())
    model = run_copy / "tflite" / "int8.tflite"
    assert_clean_failure(["evaluate", "--model", model, "--data", xray_folder])
    assert_clean_failure(["verify", run_copy])
    (run_copy / "metrics.json").write_text(_deeply_nested())
    assert_clean_failure(["evaluate", "--model", run_copy / "model.keras", "--data", run_copy])


@pytest.mark.parametrize(
    "values", [{"data": 5}, {"seed": "abc"}, {"epochs": "3"}, {"augment": "yes"}, {"dropout": None}]
)
def test_config_values_of_the_wrong_type_exit_2_before_scanning(
    values, xray_folder, tmp_path, monkeypatch
):
    from edgexray.pipeline import data

    def no_scan(*args, **kwargs):
        raise AssertionError("the data was scanned before the config was checked")

    monkeypatch.setattr(data, "scan", no_scan)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"data": str(xray_folder), **values}))
    message = assert_clean_failure(["train", "--config", config, "--out", tmp_path / "r"])
    assert next(iter(values)) in message
    assert not (tmp_path / "r").exists()


def test_manifest_that_is_not_utf8_exits_2(run_copy, xray_folder):
    manifest = run_copy / "manifest.csv"
    manifest.write_bytes(manifest.read_bytes().replace(b"NORMAL", "NÖRMAL".encode("latin-1"), 1))
    assert_clean_failure(["evaluate", "--model", run_copy / "model.keras", "--data", run_copy])
    assert_clean_failure(["verify", run_copy])
    assert_clean_failure(["prune", run_copy])


def test_benchmark_checks_its_output_folder_before_measuring(
    tiny_tflite, xray_folder, tmp_path, monkeypatch
):
    from edgexray.pipeline import scoring

    def no_scoring(*args, **kwargs):
        raise AssertionError("measured before checking --out")

    monkeypatch.setattr(scoring, "score", no_scoring)
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    for out in (blocker / "bench", _read_only_folder(tmp_path) / "bench"):
        message = assert_clean_failure(
            ["benchmark", tiny_tflite["int8"], "--data", xray_folder, "--out", out, "--runs", "3"]
        )
        assert "cannot write" in message


@pytest.mark.parametrize(
    "args, message",
    [
        (["verify", "--bogus"], "error: No such option: --bogus (see --help)"),
        (["predict", "--threads", "x", "a.png"], "error: Invalid value for '--threads'"),
        (["nonsense"], "error: No such command 'nonsense'"),
    ],
)
def test_usage_errors_are_one_line(args, message):
    result = subprocess.run(
        [sys.executable, "-c", "from edgexray.cli import app; app()", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1
    assert result.stdout == ""
