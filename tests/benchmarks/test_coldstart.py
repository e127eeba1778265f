"""Cold starts (benchmarks/coldstart.py): a process's own peak memory and time to first result."""

import sys

import pytest

from edgexray.benchmarks.coldstart import ColdStartConfig, coldstart, measure_process
from edgexray.errors import EdgexrayError

PRINT_RESULT = [sys.executable, "-c", "print('{\"probability\": 0.5}')"]


def test_peak_memory_is_the_childs_own_not_the_parents():
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"\1" * len(ballast[::4096])  # touch every page: 300 MB resident
    run = measure_process(PRINT_RESULT)
    assert run["peak_rss_mb"] < 100  # a bare Python is about 10 MB; the parent holds 300
    assert 0 < run["seconds_to_first_result"] <= run["seconds_total"]
    assert run["first_line"] == '{"probability": 0.5}'


def test_a_failing_process_raises_with_its_last_error_line():
    with pytest.raises(EdgexrayError, match="ZeroDivisionError"):
        measure_process([sys.executable, "-c", "1 / 0"])


def test_config_refuses_missing_files_and_zero_repeats(tiny_tflite, tmp_path):
    with pytest.raises(EdgexrayError, match="file not found"):
        ColdStartConfig(str(tiny_tflite["int8"]), str(tmp_path / "missing.png"))
    with pytest.raises(EdgexrayError, match="repeats"):
        ColdStartConfig(str(tiny_tflite["int8"]), str(tiny_tflite["int8"]), repeats=0)


@pytest.mark.slow
def test_coldstart_compares_the_edge_script_with_tensorflow(tiny_tflite, xray_folder):
    image = sorted((xray_folder / "PNEUMONIA").iterdir())[0]
    result = coldstart(ColdStartConfig(str(tiny_tflite["int8"]), str(image), repeats=1))
    edge, tensorflow = result["runtimes"]["edge_script"], result["runtimes"]["tensorflow_lite"]
    assert edge["probability"] == pytest.approx(tensorflow["probability"], abs=1e-6)
    assert edge["median_peak_rss_mb"] < tensorflow["median_peak_rss_mb"]
    assert len(result["targets"]) == 4


def test_memory_program_runs_by_path_and_measures_the_edge_runtime_alone(xray_folder):
    from edgexray.benchmarks import memory
    from edgexray.edge_runtime import RUNTIME_ROOT

    image = sorted((xray_folder / "NORMAL").iterdir())[0]
    spec = {"height": 32, "width": 32, "channels": 1, "normalization": "equalize"}
    job = {
        "runtime": str(RUNTIME_ROOT),
        "model": None,
        "threads": 1,
        "images": [str(image)],
        "input": spec,
    }
    assert memory.PROGRAM.is_file()
    assert 5 < memory.peak_rss_mb(memory.EDGE_PEAK_RSS, job) < 200
