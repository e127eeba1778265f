"""The benchmark harness (benchmarks/harness.py) and `edgexray benchmark`."""

import json
import logging
import shutil
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from edgexray.benchmarks import harness
from edgexray.benchmarks.harness import BenchmarkConfig
from edgexray.benchmarks.timing import KERAS_THREADS, summarize
from edgexray.cli import app
from edgexray.errors import EdgexrayError

runner = CliRunner()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = dict(threads=(1,), warmup=1, runs=5, memory_images=2)


@pytest.fixture(scope="module")
def run_with_variants(tiny_run, tiny_tflite, tmp_path_factory):
    """A copy of the tiny run holding float32 and int8 .tflite files with sidecars."""
    run_dir = tmp_path_factory.mktemp("bench") / "run copy"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "tflite").mkdir(exist_ok=True)
    for model in tiny_tflite.values():
        shutil.copy(model, run_dir / "tflite")
        shutil.copy(model.with_suffix(".json"), run_dir / "tflite")
    return run_dir


@pytest.fixture(scope="module")
def result(run_with_variants):
    return harness.benchmark([run_with_variants], harness.BenchmarkConfig(**TINY))


def _assert_one_line_error(outcome):
    assert outcome.exit_code == 2, outcome.output
    assert len([line for line in outcome.output.splitlines() if line.startswith("error:")]) == 1
    assert "Traceback" not in outcome.output


def test_benchmark_measures_every_variant_of_a_run(result):
    assert [v["name"] for v in result["variants"]] == [
        "model.keras",
        "float32.tflite",
        "int8.tflite",
    ]
    assert result["data"]["images"] == 20 and result["data"]["skipped"] == 0
    for variant in result["variants"]:
        assert 0 < variant["gzip_bytes"] <= variant["size_bytes"]
        assert variant["parameters"] > 0
        assert 0.0 <= variant["sparsity"] <= 1.0
        assert variant["peak_rss_mb"] > 0
        for stats in variant["latency"].values():
            assert stats["load_ms"] > 0
            for timing in (stats["inference_ms"], stats["end_to_end_ms"]):
                assert timing["runs"] == 5
                assert 0 < timing["min"] <= timing["p50"] <= timing["p95"] <= timing["p99"]
                assert timing["p99"] <= timing["max"] and timing["max_over_min"] >= 1
        report = variant["metrics"]
        for name in ("accuracy", "recall", "specificity", "auc", "ece"):
            assert 0.0 <= report[name] <= 1.0
        assert np.sum(report["confusion_matrix"]) == 20


def test_tflite_is_timed_per_thread_count_and_keras_in_the_tf_pool(result):
    keras, float32, int8 = result["variants"]
    assert list(keras["latency"]) == [KERAS_THREADS]
    assert list(float32["latency"]) == list(int8["latency"]) == ["1"]
    for variant in (float32, int8):
        invoke = variant["latency"]["1"]["invoke_ms"]
        assert invoke["runs"] == 5 and 0 < invoke["p50"] <= invoke["p95"] <= invoke["p99"]
    assert "invoke_ms" not in keras["latency"][KERAS_THREADS]
    assert keras["ratio_to_float32"]["p50_latency"] == {"1": None}
    assert keras["peak_rss_above_runtime_mb"] is None


def test_ratios_of_float32_to_itself_are_one(result):
    float32 = result["variants"][1]
    assert result["reference"] == "float32.tflite"
    ratios = float32["ratio_to_float32"]
    assert ratios["size"] == ratios["gzip_size"] == ratios["peak_rss"] == 1.0
    assert ratios["p50_latency"] == {"1": 1.0}


def test_int8_is_smaller_than_float32_and_targets_are_judged(result):
    int8 = result["variants"][2]
    assert int8["method"] == "int8"
    assert int8["ratio_to_float32"]["size"] < 1.0
    targets = {t["target"]: t for t in result["targets"]}
    size_target = targets["int8 size <= 1/3.5 of float32 TFLite"]
    assert size_target["met"] == (int8["ratio_to_float32"]["size"] <= 1 / 3.5)
    assert targets["pruned-int8 gzip size <= 1/8 of float32 TFLite gzip"]["met"] is None


def test_keras_parameters_are_count_params_and_tflite_folds_batchnorm(result, tiny_run):
    from edgexray import artifacts

    keras, float32, _ = result["variants"]
    assert keras["parameters"] == artifacts.load_keras(tiny_run / "model.keras").count_params()
    assert 0 < float32["parameters"] < keras["parameters"]


def test_timer_and_machine_are_recorded(result):
    assert result["timer"]["resolution_s"] > 0
    assert result["timer"]["measured_min_step_ns"] > 0
    assert result["machine"]["cores"] >= 1 and result["machine"]["python"]
    assert result["runtime_peak_rss_mb"] > 0


def test_json_and_markdown_are_written_with_one_row_per_variant(result):
    out = result["out"]
    saved = json.loads((harness.Path(out) / "benchmark.json").read_text())
    assert saved["variants"][1]["ratio_to_float32"] == result["variants"][1]["ratio_to_float32"]
    markdown = (harness.Path(out) / "benchmark.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + len(result["variants"])  # header + one per variant
    assert "## Machine" in markdown and "Timer:" in markdown


def test_plots_are_valid_pngs(result):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    assert sorted(result["plots"]) == sorted(harness.PLOTS)
    for name in result["plots"]:
        path = harness.Path(result["out"]) / name
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        height, width, _ = plt.imread(path).shape
        assert height > 100 and width > 100


def test_summarize_flags_a_wide_spread_as_unstable():
    steady = summarize([1_000_000 + i for i in range(100)])
    assert not steady["unstable"] and steady["p50"] <= steady["p95"] <= steady["p99"]
    spiky = summarize([1_000_000] * 95 + [50_000_000] * 5)
    assert spiky["unstable"] and any("p99/p50" in r for r in spiky["unstable_reasons"])
    too_short = summarize([200] * 10, timer_step_ns=40)
    assert too_short["unstable"]


def test_tflite_sparsity_matches_zeroed_keras_kernels(tiny_run, tmp_path):
    from edgexray import artifacts
    from edgexray.export import convert

    model = artifacts.load_keras(tiny_run / "model.keras")
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            kernel = layer.kernel.numpy()
            kernel.reshape(-1)[::2] = 0.0  # every other weight, like 50% pruning
            layer.kernel.assign(kernel)
    expected = harness.keras_weights(model)["sparsity"]
    assert expected >= 0.5
    for name, tflite in (
        ("float32", convert.to_float32(model)),
        ("float16", convert.to_float16(model)),
    ):
        assert convert.weight_stats(tflite)["sparsity"] == pytest.approx(expected, abs=1e-6), name


def test_tflite_files_on_a_data_folder_skip_plots_without_matplotlib(
    tiny_tflite, xray_folder, tmp_path, monkeypatch, caplog
):
    import edgexray.benchmarks

    caplog.set_level(logging.INFO, logger="edgexray")
    # As on a machine without the [plots] extra: importing matplotlib fails.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delitem(sys.modules, "edgexray.benchmarks.plots", raising=False)
    monkeypatch.delattr(edgexray.benchmarks, "plots", raising=False)
    config = harness.BenchmarkConfig(**TINY, data=str(xray_folder), out=str(tmp_path / "out"))
    result = harness.benchmark([tiny_tflite["int8"], tiny_tflite["float32"]], config)
    assert [v["name"] for v in result["variants"]] == ["float32.tflite", "int8.tflite"]
    assert result["data"]["images"] == 80
    assert result["plots"] == [] and not list((tmp_path / "out").glob("*.png"))
    assert sum("skipping plots" in r.message for r in caplog.records) == 1


def test_cli_missing_model_is_one_line_error(tmp_path):
    _assert_one_line_error(runner.invoke(app, ["benchmark", str(tmp_path / "gone.tflite")]))


def test_cli_unreadable_data_is_one_line_error(tiny_tflite, tmp_path):
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "bad" / label).mkdir(parents=True)
        (tmp_path / "bad" / label / "film.jpeg").write_bytes(b"not a jpeg")
    model = str(tiny_tflite["float32"])
    _assert_one_line_error(
        runner.invoke(app, ["benchmark", model, "--data", str(tmp_path / "bad")])
    )
    _assert_one_line_error(runner.invoke(app, ["benchmark", model, "--data", str(tmp_path / "no")]))


def test_cli_rejects_bad_thread_counts(tiny_tflite):
    model = str(tiny_tflite["float32"])
    _assert_one_line_error(runner.invoke(app, ["benchmark", model, "--threads", "one"]))
    _assert_one_line_error(runner.invoke(app, ["benchmark", model, "--threads", "0"]))


@pytest.mark.parametrize("threads", [(100000,), (1, 65)])
def test_benchmark_thread_counts_are_capped_as_predict_caps_them(threads):
    with pytest.raises(EdgexrayError, match="counts from 1 to 64"):
        BenchmarkConfig(threads=threads)
