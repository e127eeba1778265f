"""Cold start and peak memory of the standalone edge runtime against TensorFlow.

Every measurement is a fresh process classifying one image: the time from starting the
process to its first result line on stdout, and the process's peak resident memory. The
edge side is `python infer.py --model MODEL IMAGE`, exactly as on a device. The
TensorFlow side runs the same prediction with `tf.lite.Interpreter` on the same model
(and, given a .keras model, with tf_keras), preprocessing with the same infer.py loaded by
path, so the difference is the runtime alone.

Peak memory comes from `/usr/bin/time -f %M`, which forks from its own small process:
Linux carries a parent's peak into a child's ru_maxrss (vfork, then exec), so measuring
the child directly from a large parent would report the parent's size.

    python -m edgexray.benchmarks.coldstart MODEL.tflite IMAGE [--keras MODEL.keras]
        [--repeats 5] [--out coldstart.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgexray import __version__, artifacts
from edgexray.edge_runtime import RUNTIME_ROOT
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.errors import EdgexrayError

SCHEMA = "edgexray.coldstart/1"
TIME = "/usr/bin/time"
MAX_SECONDS = 300.0  # per process: TensorFlow's import alone takes seconds on a slow disk
TARGET_SECONDS = 0.3
TARGET_RSS_MB = 80.0
TARGET_RATIO = 10.0

# The TensorFlow side, run by path: infer.py loaded by path (not one edgexray module is
# imported for a .tflite), then TensorFlow's own interpreter, or tf_keras for a .keras model.
TENSORFLOW_PREDICTION = Path(__file__).with_name("tensorflow_predict.py")


@dataclass(frozen=True)
class ColdStartConfig:
    """What to measure.

    Attributes:
        model: the .tflite the edge runtime runs (its sidecar next to it).
        image: the one image classified by every process.
        keras_model: also time this .keras model through tf_keras (optional).
        repeats: fresh processes per runtime; the median is reported.
    """

    model: str
    image: str
    keras_model: str | None = None
    repeats: int = 5

    def __post_init__(self):
        if self.repeats < 1:
            raise EdgexrayError(f"repeats must be at least 1, not {self.repeats}")
        for path in (self.model, self.image, self.keras_model):
            if path is not None and not Path(path).is_file():
                raise EdgexrayError(f"file not found: {path}")


def measure_process(command: list[str], env: dict | None = None) -> dict:
    """One fresh process: seconds to its first stdout line, in total, and peak RSS in MiB.

    Raises:
        EdgexrayError: /usr/bin/time is missing, or the process failed or printed nothing.
    """
    if not Path(TIME).is_file():
        raise EdgexrayError(f"{TIME} is needed to measure peak memory (apt-get install time)")
    # stderr goes to a file, not a pipe: a child that logs a lot before its first result
    # would otherwise fill the pipe and block while we wait for its first stdout line.
    with (
        tempfile.NamedTemporaryFile(suffix=".rss") as rss,
        tempfile.TemporaryFile("w+") as stderr,
    ):
        started = time.perf_counter()
        process = subprocess.Popen(
            [TIME, "-f", "%M", "-o", rss.name, *command],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
        first_line = process.stdout.readline()
        first_result = time.perf_counter() - started
        try:
            process.communicate(timeout=MAX_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            raise EdgexrayError(f"{command[1]} ran for over {MAX_SECONDS:.0f} s") from None
        total = time.perf_counter() - started
        rss_kb = Path(rss.name).read_text().split()
        stderr.seek(0)
        errors = stderr.read()
    if process.returncode != 0 or not first_line.strip() or not rss_kb:
        last = [line for line in errors.splitlines() if line.strip()] or ["no output"]
        raise EdgexrayError(f"{' '.join(command[:2])} failed: {last[-1]}")
    return {
        "seconds_to_first_result": first_result,
        "seconds_total": total,
        "peak_rss_mb": int(rss_kb[-1]) / 1024,
        "first_line": first_line.strip(),
    }


def _summary(runs: list[dict]) -> dict:
    keys = ("seconds_to_first_result", "seconds_total", "peak_rss_mb")
    return {
        **{f"median_{key}": statistics.median(r[key] for r in runs) for key in keys},
        "min_seconds_to_first_result": min(r["seconds_to_first_result"] for r in runs),
        "max_seconds_to_first_result": max(r["seconds_to_first_result"] for r in runs),
        "probability": json.loads(runs[0]["first_line"])["probability"],
        "runs": runs,
    }


def coldstart(config: ColdStartConfig, on_run=None) -> dict:
    """Cold start and peak memory of the edge runtime and of TensorFlow, repeated.

    Args:
        config: model, image, optional Keras model and repeats.
        on_run: called with (runtime name, run index, run dict) after each process.

    Returns:
        Per-runtime medians and runs, edge/TensorFlow ratios and the targets.

    Raises:
        EdgexrayError: a missing file, a model the runtime refuses, or a failed process.
    """
    try:
        input_spec = load_sidecar(config.model)["input"]
    except InferenceError as err:
        raise EdgexrayError(str(err)) from None
    runtime = str(RUNTIME_ROOT)
    quiet_tf = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    tensorflow = [sys.executable, str(TENSORFLOW_PREDICTION), runtime]
    # The device's command line as a bundle runs it: the package edge_runtime alone.
    device = {**os.environ, "PYTHONPATH": runtime}
    commands = {
        "edge_script": (
            [sys.executable, "-m", "edge_runtime.infer", "--model", config.model, config.image],
            device,
        ),
        "tensorflow_lite": (
            [*tensorflow, config.model, config.image, json.dumps(input_spec)],
            quiet_tf,
        ),
    }
    if config.keras_model:
        commands["tensorflow_keras"] = (
            [*tensorflow, config.keras_model, config.image, json.dumps(input_spec)],
            quiet_tf,
        )
    runtimes = {}
    for name, (command, env) in commands.items():
        runs = []
        for index in range(config.repeats):
            runs.append(measure_process(command, env))
            if on_run:
                on_run(name, index, runs[-1])
        runtimes[name] = _summary(runs)
    edge = runtimes["edge_script"]
    ratios = {
        name: {
            "cold_start": summary["median_seconds_to_first_result"]
            / edge["median_seconds_to_first_result"],
            "peak_rss": summary["median_peak_rss_mb"] / edge["median_peak_rss_mb"],
        }
        for name, summary in runtimes.items()
        if name != "edge_script"
    }
    targets = [
        {
            "target": f"edge cold start <= {TARGET_SECONDS} s",
            "value": edge["median_seconds_to_first_result"],
            "met": edge["median_seconds_to_first_result"] <= TARGET_SECONDS,
        },
        {
            "target": f"edge peak RSS <= {TARGET_RSS_MB:.0f} MB",
            "value": edge["median_peak_rss_mb"],
            "met": edge["median_peak_rss_mb"] <= TARGET_RSS_MB,
        },
    ]
    for name, ratio in ratios.items():
        for key, label in (("cold_start", "cold start"), ("peak_rss", "peak RSS")):
            targets.append(
                {
                    "target": f"{name} {label} >= {TARGET_RATIO:.0f}x the edge script's",
                    "value": ratio[key],
                    "met": ratio[key] >= TARGET_RATIO,
                }
            )
    return {
        "schema": SCHEMA,
        "edgexray_version": __version__,
        "config": asdict(config),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
        },
        "runtimes": runtimes,
        "ratios": ratios,
        "targets": targets,
    }


def summary_lines(result: dict) -> list[str]:
    lines = [f"{'runtime':<18} {'cold start s':>12} {'peak RSS MB':>12} {'probability':>12}"]
    for name, runtime in result["runtimes"].items():
        lines.append(
            f"{name:<18} {runtime['median_seconds_to_first_result']:>12.3f} "
            f"{runtime['median_peak_rss_mb']:>12.1f} {runtime['probability']:>12.6f}"
        )
    for target in result["targets"]:
        lines.append(
            f"target {'met' if target['met'] else 'MISSED'}: {target['target']} "
            f"({target['value']:.3g})"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgexray.benchmarks.coldstart",
        description="Cold start and peak RSS of the edge script against TensorFlow.",
    )
    parser.add_argument("model", help="the .tflite model (its .json sidecar next to it)")
    parser.add_argument("image", help="the image every process classifies")
    parser.add_argument("--keras", default=None, help="also time this .keras model")
    parser.add_argument("--repeats", type=int, default=5, help="processes per runtime [5]")
    parser.add_argument("--out", type=Path, default=None, help="write the result as JSON")
    args = parser.parse_args(argv)
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        print("warning: the machine is busy; cold starts will read high", file=sys.stderr)
    try:
        config = ColdStartConfig(args.model, args.image, args.keras, args.repeats)
        result = coldstart(
            config,
            on_run=lambda name, i, run: print(
                f"{name} run {i + 1}: {run['seconds_to_first_result']:.3f} s, "
                f"{run['peak_rss_mb']:.1f} MB",
                file=sys.stderr,
            ),
        )
    except EdgexrayError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    for line in summary_lines(result):
        print(line)
    if args.out:
        artifacts.write_json(args.out, result)
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
