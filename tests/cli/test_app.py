"""The edgexray command line as a whole: help, version, options, naming a model, signals."""

import subprocess
import sys
from pathlib import Path

from conftest import REPO
from typer.testing import CliRunner

from edgexray import __version__
from edgexray.cli import app

runner = CliRunner()


def test_help_and_version_do_not_import_tensorflow():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from edgexray.cli import app\n"
        "for args in (['--help'], ['--version'], ['train', '--help']):\n"
        "    assert CliRunner().invoke(app, args).exit_code == 0\n"
        "heavy = ('tensorflow', 'tf_keras', 'tensorflow_model_optimization')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def _assert_one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "Traceback" not in result.output


def test_train_without_a_pneumonia_folder_exits_2(tmp_path):
    (tmp_path / "NORMAL").mkdir()
    _assert_one_line_error(
        runner.invoke(app, ["train", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    )


def test_train_on_a_missing_folder_exits_2(tmp_path):
    result = runner.invoke(
        app, ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]
    )
    _assert_one_line_error(result)
    assert "not found" in result.output


def test_train_with_a_bad_option_value_exits_2(tmp_path, xray_folder):
    result = runner.invoke(
        app,
        ["train", "--data", str(xray_folder), "--out", str(tmp_path / "r"), "--target-recall", "2"],
    )
    _assert_one_line_error(result)


def test_help_shows_the_config_dataclasses_defaults():
    import dataclasses
    import re

    import typer.main

    from edgexray.benchmarks.harness import BenchmarkConfig
    from edgexray.export.bundle import BundleConfig
    from edgexray.export.quantize import QuantizeConfig
    from edgexray.pipeline.calibrate import CalibrateConfig
    from edgexray.pipeline.prune import PruneConfig
    from edgexray.pipeline.train import TrainConfig
    from edgexray.pipeline.verify import GateLimits

    configs = {
        "train": [TrainConfig],
        "prune": [PruneConfig],
        "quantize": [QuantizeConfig],
        "verify": [GateLimits],
        "benchmark": [BenchmarkConfig],
        "bundle": [BundleConfig],
        "calibrate": [CalibrateConfig],
        "run": [TrainConfig, PruneConfig, GateLimits],
    }
    commands = typer.main.get_command(app).commands
    checked = set()
    for command, classes in configs.items():
        for param in commands[command].params:
            assert not re.search(r"\[[\d.e-]+\]", param.help or ""), (command, param.help)
            field = max(param.opts, key=len).lstrip("-").replace("-", "_")
            for config in classes:
                fields = {f.name: f for f in dataclasses.fields(config)}
                if field not in fields:
                    continue
                expected = fields[field].default
                if fields[field].default_factory is not dataclasses.MISSING:
                    expected = fields[field].default_factory()
                if expected is dataclasses.MISSING:  # a required field: no default to show
                    break
                shown = param.default
                if isinstance(expected, tuple):  # --threads 1,2
                    expected = ",".join(map(str, expected))
                assert shown == expected, (command, field, shown, expected)
                checked.add((command, field))
                break
    assert {c for c, _ in checked} == set(configs)
    assert len(checked) >= 30, sorted(checked)


def test_only_options_given_override_a_train_config_file(tmp_path):
    config = tmp_path / "my config.json"
    config.write_text('{"data": "%s", "epochs": 0}' % (tmp_path / "missing"))
    # The file's epochs stands when --epochs is not given, though --help shows a default.
    result = runner.invoke(app, ["train", "--config", str(config)])
    _assert_one_line_error(result)
    assert "epochs must be >= 1" in result.output
    result = runner.invoke(app, ["train", "--config", str(config), "--epochs", "3"])
    _assert_one_line_error(result)
    assert "data folder not found" in result.output


# --- one way to name a model -------------------------------------------------------------

MODEL_COMMANDS = ("predict", "explain", "evaluate", "calibrate", "bundle", "serve")


def test_every_command_that_runs_a_model_takes_model_defaulting_to_the_shipped_one():
    for name in MODEL_COMMANDS:
        flat = " ".join(runner.invoke(app, [name, "--help"]).output.split())
        assert "--model MODEL" in flat and "default: the shipped model" in flat, name


def test_a_folder_holding_one_model_names_it(tmp_path, tiny_tflite):
    folder = tmp_path / "model folder"
    folder.mkdir()
    for model in (tiny_tflite["int8"], tiny_tflite["int8"].with_suffix(".json")):
        (folder / model.name).write_bytes(model.read_bytes())
    film = str(_film(tmp_path))
    by_folder = runner.invoke(app, ["predict", "--model", str(folder), film])
    by_file = runner.invoke(app, ["predict", "--model", str(tiny_tflite["int8"]), film])
    assert by_folder.exit_code == by_file.exit_code, by_folder.output
    assert _without_latency(by_folder.stdout) == _without_latency(by_file.stdout)


def _without_latency(output: str) -> list[dict]:
    import json

    records = [json.loads(line) for line in output.splitlines()]
    return [{k: v for k, v in record.items() if k != "latency_ms"} for record in records]


def _film(tmp_path):
    from PIL import Image

    path = tmp_path / "film.png"
    Image.new("L", (40, 48), 90).save(path)
    return path


def test_a_model_of_another_format_is_one_line_saying_what_is_expected(tmp_path):
    weights = tmp_path / "model.h5"
    weights.write_bytes(b"not a tflite")
    result = runner.invoke(app, ["predict", "--model", str(weights), str(_film(tmp_path))])
    _assert_one_line_error(result)
    assert "expected a .tflite model" in result.output


def test_the_old_positional_model_still_works_with_a_deprecation_line(tmp_path, tiny_tflite):
    model = str(tiny_tflite["int8"])
    film = str(_film(tmp_path))
    old = runner.invoke(app, ["explain", model, film, "--out", str(tmp_path / "old")])
    new = runner.invoke(app, ["explain", "--model", model, film, "--out", str(tmp_path / "new")])
    assert old.exit_code == new.exit_code
    assert "deprecated: write edgexray explain --model MODEL" in old.stderr
    assert "deprecated" not in new.stderr
    both = runner.invoke(app, ["bundle", model, "--model", model, "--target", "rpi", "--out", "b"])
    _assert_one_line_error(both)
    assert "give the model once" in both.output


SIGTERM_PROGRAM = """
import os, signal, sys, tempfile, time
import typer
from edgexray.cli.common import user_errors

@user_errors
def command():
    with tempfile.TemporaryDirectory(dir=sys.argv[1]) as saved_model:  # as the converter's
        open(os.path.join(saved_model, "saved_model.pb"), "wb").write(bytes(5_500_000))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)

try:
    command()
except typer.Exit as stop:
    sys.exit(stop.exit_code)
"""


def test_sigterm_stops_a_command_cleanly_removing_its_temporary_folders(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_PROGRAM, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 143, result.stderr
    assert result.stderr.strip() == "error: terminated"
    assert list(tmp_path.iterdir()) == []


def test_models_lists_the_shipped_model_with_its_sha256_and_card():
    import json

    from edgexray.edge_runtime import REFERENCE_MODEL
    from edgexray.edge_runtime.sidecar import load_sidecar

    listed = json.loads(runner.invoke(app, ["models", "--json"]).stdout)
    (default,) = [model for model in listed if model["default"]]
    assert default["path"] == str(REFERENCE_MODEL)
    assert default["sha256"] == load_sidecar(REFERENCE_MODEL)["sha256"]
    assert default["card"] and Path(default["card"]).is_file()
    plain = runner.invoke(app, ["models"]).stdout
    assert f"{REFERENCE_MODEL.name} (default)" in plain and default["sha256"] in plain
