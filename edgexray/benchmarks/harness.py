"""`edgexray benchmark`: every variant of a run measured side by side on the same machine.

For each model (the run's float Keras model and every tflite/*.tflite variant) it measures
file size (raw and gzip -9), parameter count, measured sparsity, interpreter latency per
thread count (load time, inference only, end to end per image), peak resident memory in a
separate process, and the clinical metrics on the test split at the variant's own
threshold. Ratios are taken against the float32 .tflite of the same benchmark, so they
compare numbers measured minutes apart on the same machine, never across machines.

Parameter counts and sparsity of a .tflite are measured by
edgexray.export.convert.weight_stats (see there). The converter folds BatchNormalization
into the convolutions, so a .tflite counts fewer parameters than Keras's count_params(),
which also counts the BatchNormalization statistics.
"""

from __future__ import annotations

import datetime
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from edgexray import __version__, artifacts
from edgexray.edge_runtime import infer
from edgexray.errors import EdgexrayError, check_config
from edgexray.export import convert
from edgexray.pipeline import evaluate

log = logging.getLogger("edgexray")

SCHEMA = "edgexray.benchmark/1"
OUT_DIR = artifacts.BENCHMARK_DIR
KERAS_THREADS = "tf"  # Keras runs in TensorFlow's own thread pool, set once per process
# A timed run is not trusted when its tail or its spread is this wide: on a quiet
# machine p99 stays within 2x of p50 and max within a few times min.
UNSTABLE_P99_OVER_P50 = 3.0
UNSTABLE_MAX_OVER_MIN = 10.0
# A median below this many timer ticks is too short for the timer to resolve.
MIN_TICKS_PER_RUN = 100
# Variants in the order a reader compares them; unknown methods follow by name.
METHOD_ORDER = ("float32", "float16", "dynamic", "int8", "qat", "pruned-int8", "pqat")
PLOTS = ("size_vs_recall.png", "latency.png", "confusion_matrices.png", "roc_curves.png")


@dataclass(frozen=True)
class BenchmarkConfig:
    """How to benchmark; saved inside benchmark.json.

    Attributes:
        threads: interpreter thread counts to time.
        warmup: untimed runs before timing (first invokes allocate and fill caches).
        runs: timed runs per thread count.
        out: output folder; default RUN_DIR/benchmark (or next to the first model).
        data: test images (folder with test/ or NORMAL/ and PNEUMONIA/); default the
            run's manifest test split.
        memory_images: images the separate memory-measuring process classifies.
    """

    threads: tuple[int, ...] = (1, 2)
    warmup: int = 10
    runs: int = 100
    out: str | None = None
    data: str | None = None
    memory_images: int = 5

    def __post_init__(self):
        object.__setattr__(self, "threads", tuple(self.threads))
        checks = {
            "threads must be one or more distinct counts >= 1": len(self.threads) > 0
            and all(isinstance(t, int) and t >= 1 for t in self.threads)
            and len(set(self.threads)) == len(self.threads),
            "warmup must be >= 0": self.warmup >= 0,
            "runs must be >= 2": self.runs >= 2,
            "memory_images must be >= 1": self.memory_images >= 1,
        }
        check_config("benchmark config", checks)

    @staticmethod
    def parse_threads(text: str) -> tuple[int, ...]:
        """'1,2' → (1, 2)."""
        try:
            return tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise EdgexrayError(f"--threads wants counts like 1,2, not {text!r}") from None

    def to_json(self) -> dict:
        return {**asdict(self), "threads": list(self.threads)}


@dataclass(frozen=True)
class Variant:
    """One model to benchmark: evaluate's loaded Model plus the method its sidecar names."""

    model: evaluate.Model
    method: str

    @property
    def name(self) -> str:
        return self.model.path.name

    @property
    def kind(self) -> str:
        return self.model.kind


def _variant(path: Path) -> Variant:
    model = evaluate.load_model(path)
    if model.kind == "keras":  # model.keras is the float baseline; pruned.keras says so
        return Variant(
            model, "keras-float32" if path.name == artifacts.MODEL else f"keras-{path.stem}"
        )
    return Variant(model, str(infer.load_sidecar(path).get("method", path.stem)))


def _order(variant: Variant) -> tuple:
    if variant.kind == "keras":
        return (0, 0, variant.name)
    rank = METHOD_ORDER.index(variant.method) if variant.method in METHOD_ORDER else 99
    return (1, rank, variant.name)


def model_files(models: Sequence[Path | str]) -> tuple[list[Path], Path | None]:
    """The model files to benchmark and the run directory they belong to (or None).

    One directory means a run: its model.keras and every tflite/*.tflite. Otherwise each
    path is a .keras file inside a run directory or a .tflite file with its sidecar.

    Raises:
        EdgexrayError: a missing model, a directory that is no run, or nothing given.
    """
    paths = [Path(p) for p in models]
    if not paths:
        raise EdgexrayError("give a run directory or one or more .keras/.tflite models")
    if len(paths) == 1 and paths[0].is_dir():
        run_dir = artifacts.require_run(paths[0])
        return [
            run_dir / artifacts.MODEL,
            *sorted((run_dir / artifacts.TFLITE_DIR).glob("*.tflite")),
        ], run_dir
    for path in paths:
        if not path.is_file():
            raise EdgexrayError(f"model not found: {path}")
    if len({p.resolve() for p in paths}) != len(paths):
        raise EdgexrayError("the same model is given twice")
    homes = {p.parent if p.suffix == ".keras" else p.parent.parent for p in paths}
    run_dir = homes.pop() if len(homes) == 1 else None
    if run_dir is not None and not (run_dir / artifacts.MANIFEST).is_file():
        run_dir = None
    return paths, run_dir


# --- static measurements: size, parameters, sparsity ----------------------------------


def keras_weights(model) -> dict:
    """count_params() and the zero fraction of the conv/dense kernels of a Keras model."""
    from edgexray.pipeline.prune import measure_sparsity

    kernels = measure_sparsity(model)
    return {
        "parameters": int(model.count_params()),
        "sparsity": kernels["zeros"] / kernels["weights"],
    }


# --- timing ----------------------------------------------------------------------------


def timer_info(samples: int = 2000) -> dict:
    """The clock behind every timing, its stated resolution and the smallest step seen."""
    info = time.get_clock_info("perf_counter")
    steps = []
    for _ in range(samples):
        start = time.perf_counter_ns()
        end = time.perf_counter_ns()
        while end == start:
            end = time.perf_counter_ns()
        steps.append(end - start)
    return {
        "clock": "time.perf_counter",
        "implementation": info.implementation,
        "resolution_s": info.resolution,
        "measured_min_step_ns": int(min(steps)),
        "measured_median_step_ns": float(np.median(steps)),
    }


def summarize(durations_ns: Sequence[int], timer_step_ns: int = 1) -> dict:
    """Percentiles, mean and spread in milliseconds, and whether the run can be trusted."""
    ms = np.asarray(durations_ns, dtype=np.float64) / 1e6
    p50, p95, p99 = (float(v) for v in np.percentile(ms, [50, 95, 99]))
    low, high = float(ms.min()), float(ms.max())
    spread = high / low if low > 0 else float("inf")
    tail = p99 / p50 if p50 > 0 else float("inf")
    reasons = []
    if tail > UNSTABLE_P99_OVER_P50:
        reasons.append(f"p99/p50 {tail:.1f} > {UNSTABLE_P99_OVER_P50:g}")
    if spread > UNSTABLE_MAX_OVER_MIN:
        reasons.append(f"max/min {spread:.1f} > {UNSTABLE_MAX_OVER_MIN:g}")
    if p50 * 1e6 < MIN_TICKS_PER_RUN * timer_step_ns:
        reasons.append(f"p50 under {MIN_TICKS_PER_RUN} timer steps")
    return {
        "runs": int(ms.size),
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "mean": float(ms.mean()),
        "std": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "min": low,
        "max": high,
        "max_over_min": spread,
        "p99_over_p50": tail,
        "unstable": bool(reasons),
        "unstable_reasons": reasons,
    }


def time_calls(call: Callable[[int], object], warmup: int, runs: int) -> list[int]:
    """Durations in ns of call(i) for i in range(runs), after warmup untimed calls.

    The garbage collector is paused while timing, as timeit does, so a collection
    triggered by earlier allocations does not land inside one variant's numbers.
    """
    for i in range(warmup):
        call(i)
    durations = []
    collecting = gc.isenabled()
    gc.disable()
    try:
        for i in range(runs):
            start = time.perf_counter_ns()
            call(i)
            durations.append(time.perf_counter_ns() - start)
    finally:
        if collecting:
            gc.enable()
    return durations


def _tflite_latency(model: evaluate.Model, file: str, threads: int, config, step_ns: int):
    """Load time, then inference-only and end-to-end timings of one .tflite."""
    # The device's own path: Classifier (sidecar check, cached tensor details, the uint8
    # fast path for full-int8 models), so what is timed is what infer.py does.
    started = time.perf_counter()
    classifier = infer.Classifier(model.path, threads)
    interpreter = classifier.interpreter
    load_ms = (time.perf_counter() - started) * 1e3
    batch = classifier.model_input(file)
    inference = time_calls(lambda i: classifier.run(batch), config.warmup, config.runs)
    # invoke() alone, on the input set by the last run: the interpreter without setting the
    # input and reading the output around it, to tell the two apart when a variant is slow.
    invoke = time_calls(lambda i: interpreter.invoke(), 0, config.runs)
    end_to_end = time_calls(
        lambda i: classifier.probability(file), min(config.warmup, 2), config.runs
    )
    return {
        "load_ms": load_ms,
        "inference_ms": summarize(inference, step_ns),
        "invoke_ms": summarize(invoke, step_ns),
        "end_to_end_ms": summarize(end_to_end, step_ns),
    }


def _keras_latency(path: Path, input_spec: dict, file: str, config, step_ns: int):
    """The same timings for a Keras model called eagerly on one image."""
    from edgexray.compat import keras  # noqa: F401  (TF import outside the load timing)

    started = time.perf_counter()
    model = artifacts.load_keras(path)
    load_ms = (time.perf_counter() - started) * 1e3
    batch = infer.preprocess(file, input_spec)[np.newaxis]
    inference = time_calls(lambda i: model(batch, training=False), config.warmup, config.runs)
    end_to_end = time_calls(
        lambda i: model(infer.preprocess(file, input_spec)[np.newaxis], training=False),
        min(config.warmup, 2),
        config.runs,
    )
    return model, {
        "load_ms": load_ms,
        "inference_ms": summarize(inference, step_ns),
        "end_to_end_ms": summarize(end_to_end, step_ns),
    }


# --- peak memory in a separate process ---------------------------------------------------

# Linux's ru_maxrss survives fork and exec: a child of this process (which may hold
# TensorFlow) would report our peak, not its own. VmHWM belongs to the address space
# that exec created, so it is the child's own peak; ru_maxrss is the fallback elsewhere.
_PEAK = r"""
def _peak_rss_kb():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else float(peak)
"""

# Runs the standalone edge runtime file itself (loaded by path, so not a single edgexray
# module is imported) on a few images and reports the process's peak resident memory.
# With no model it measures the runtime alone: interpreter import plus image decoding.
_EDGE_PEAK_RSS = (
    "import importlib.util, json, sys\n"
    + _PEAK
    + r"""
job = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("edge_infer", job["runtime"])
infer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(infer)
if job["model"]:
    classifier = infer.Classifier(job["model"], job["threads"])
    for image in job["images"]:
        classifier.probability(image)
else:
    infer.interpreter_class()
    for image in job["images"]:
        infer.preprocess(image, job["input"])
print(json.dumps({"peak_rss_kb": _peak_rss_kb()}))
"""
)

_KERAS_PEAK_RSS = (
    "import json, sys\n"
    + _PEAK
    + r"""
job = json.loads(sys.argv[1])
from edgexray import artifacts
from edgexray.edge_runtime.infer import preprocess
model = artifacts.load_keras(job["model"])
for image in job["images"]:
    model(preprocess(image, job["input"])[None], training=False)
print(json.dumps({"peak_rss_kb": _peak_rss_kb()}))
"""
)


def peak_rss_mb(script: str, job: dict) -> float:
    """Run a measuring script in a fresh Python process; its peak RSS in MiB.

    Raises:
        EdgexrayError: the process failed (its last error line is in the message).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise EdgexrayError(f"memory measurement of {job['model']} took over 600 s") from None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        raise EdgexrayError(f"memory measurement of {job['model']} failed: {errors[-1]}")
    return json.loads(lines[-1])["peak_rss_kb"] / 1024


# --- the benchmark ----------------------------------------------------------------------


def machine_info() -> dict:
    """CPU, cores, OS, Python and library versions, and the load when the run started."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in (
        "edgexray",
        "tensorflow",
        "tf-keras",
        "tensorflow-model-optimization",
        "ai-edge-litert",
        "numpy",
        "pillow",
        "matplotlib",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _ratio(value, reference):
    if value is None or reference is None or not reference:
        return None
    return float(value) / float(reference)


def _add_ratios(rows: list[dict], thread_keys: list[str]) -> str | None:
    """Each variant's size, gzip size, p50 latency and memory over float32 TFLite's."""
    reference = next((r for r in rows if r["kind"] == "tflite" and r["method"] == "float32"), None)
    for row in rows:
        ref = reference or {}
        ref_latency = ref.get("latency", {})
        row["ratio_to_float32"] = {
            "size": _ratio(row["size_bytes"], ref.get("size_bytes")),
            "gzip_size": _ratio(row["gzip_bytes"], ref.get("gzip_bytes")),
            "p50_latency": {
                key: _ratio(
                    row["latency"][key]["inference_ms"]["p50"] if key in row["latency"] else None,
                    ref_latency[key]["inference_ms"]["p50"] if key in ref_latency else None,
                )
                for key in thread_keys
            },
            "peak_rss": _ratio(row["peak_rss_mb"], ref.get("peak_rss_mb")),
        }
    return reference["name"] if reference else None


def _targets(rows: list[dict], thread_keys: list[str]) -> list[dict]:
    """The issue's compression targets, each marked met, missed or not measured (None)."""
    by_method = {r["method"]: r for r in rows if r["kind"] == "tflite"}
    int8, pruned = by_method.get("int8"), by_method.get("pruned-int8")
    checks = [
        (
            f"int8 p50 latency <= 0.5x float32 TFLite ({key} thread{'s' * (key != '1')})",
            int8 and int8["ratio_to_float32"]["p50_latency"][key],
            0.5,
        )
        for key in thread_keys
    ] + [
        (
            "int8 size <= 1/3.5 of float32 TFLite",
            int8 and int8["ratio_to_float32"]["size"],
            1 / 3.5,
        ),
        (
            "pruned-int8 gzip size <= 1/8 of float32 TFLite gzip",
            pruned and pruned["ratio_to_float32"]["gzip_size"],
            1 / 8,
        ),
    ]
    return [
        {
            "target": name,
            "ratio": value,
            "limit": limit,
            "met": None if value is None else bool(value <= limit),
        }
        for name, value, limit in checks
    ]


def _images(config: BenchmarkConfig, run_dir: Path | None, paths, labels) -> evaluate.Images:
    if paths is not None:
        return evaluate.Images([str(p) for p in paths], np.asarray(labels), "given paths", "")
    if config.data:
        return evaluate.find_images(Path(config.data), "test")
    if run_dir is None:
        raise EdgexrayError("these models are not in a run directory: give --data DIR")
    return evaluate.find_images(run_dir, "test")


def _measure(variant: Variant, file: str, config, step_ns: int) -> dict:
    """Latency per thread count, parameters and sparsity of one variant."""
    model = variant.model
    if variant.kind == "keras":
        keras_model, latency = _keras_latency(model.path, model.input_spec, file, config, step_ns)
        return {"latency": {KERAS_THREADS: latency}, **keras_weights(keras_model)}
    latency = {str(t): _tflite_latency(model, file, t, config, step_ns) for t in config.threads}
    return {"latency": latency, **convert.weight_stats(Path(model.path).read_bytes())}


def benchmark(
    models: Sequence[Path | str],
    config: BenchmarkConfig,
    paths: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
) -> dict:
    """Measure every model and write benchmark.json, benchmark.md and the plots.

    Args:
        models: one run directory, or .keras / .tflite files.
        config: what to measure and where to write.
        paths: test images to evaluate on (with labels, 1 = pneumonia); default
            config.data's test images, else the run's manifest test split.
        labels: the labels of paths.

    Returns:
        The result also written to benchmark.json; its "out" key is the output folder.

    Raises:
        EdgexrayError: missing or unreadable models or data.
    """
    started = time.monotonic()
    files, run_dir = model_files(models)
    images = _images(config, run_dir, paths, labels)  # bad data fails before models load
    variants = sorted((_variant(f) for f in files), key=_order)
    out = Path(config.out) if config.out else (run_dir or variants[0].model.path.parent) / OUT_DIR
    machine = machine_info()
    timer = timer_info()
    step_ns = max(timer["measured_min_step_ns"], 1)

    # The evaluation code decodes each test image once for every variant.
    scores = evaluate.score([v.model for v in variants], images.paths)
    readable = ~np.isnan(scores).any(axis=0)
    if not readable.any():
        raise EdgexrayError(f"none of the {len(images.paths)} test images is readable")
    paths = [p for p, ok in zip(images.paths, readable, strict=True) if ok]
    labels, scores = np.asarray(images.labels)[readable], scores[:, readable]
    skipped = int((~readable).sum())
    log.info("%d test images (%d pneumonia), %d skipped", len(paths), int(labels.sum()), skipped)

    # Timings repeat one image of median file size: a typical film, and repeats of one
    # image vary only with the machine, which is what the stability check looks at.
    typical = sorted(paths, key=lambda path: (os.path.getsize(path), path))[len(paths) // 2]
    memory_images = paths[: config.memory_images]
    runtime_rss = peak_rss_mb(
        _EDGE_PEAK_RSS,
        {
            "runtime": infer.__file__,
            "model": None,
            "threads": 1,
            "images": memory_images,
            "input": variants[0].model.input_spec,
        },
    )
    thread_keys = [str(t) for t in config.threads]
    rows = []
    for variant, probabilities in zip(variants, scores, strict=True):
        model = variant.model
        log.info("benchmarking %s", variant.name)
        measured = _measure(variant, typical, config, step_ns)
        job = {
            "runtime": infer.__file__,
            "model": str(model.path),
            "images": memory_images,
            "threads": max(config.threads),
            "input": model.input_spec,
        }
        rss = peak_rss_mb(_KERAS_PEAK_RSS if variant.kind == "keras" else _EDGE_PEAK_RSS, job)
        report = evaluate.summarize(labels, probabilities, model.threshold)
        latency = measured["latency"]
        rows.append(
            {
                "name": variant.name,
                "path": str(model.path),
                "kind": variant.kind,
                "method": variant.method,
                "threshold": model.threshold,
                **convert.file_sizes(Path(model.path).read_bytes()),
                **measured,
                "peak_rss_mb": rss,
                "peak_rss_above_runtime_mb": rss - runtime_rss
                if variant.kind == "tflite"
                else None,
                "metrics": report,
                "unstable": any(
                    stats[part]["unstable"]
                    for stats in latency.values()
                    for part in ("inference_ms", "end_to_end_ms")
                ),
            }
        )
        log.info(
            "%s: %.1f KB, p50 %s ms, recall %s, peak RSS %.0f MB",
            variant.name,
            rows[-1]["size_bytes"] / 1024,
            "/".join(f"{s['inference_ms']['p50']:.3f}" for s in latency.values()),
            _number(report["recall"], 4),
            rss,
        )
    reference = _add_ratios(rows, thread_keys)
    float_recall = next((r["metrics"]["recall"] for r in rows if r["kind"] == "keras"), None)
    for row in rows:
        row["recall_minus_float"] = (
            row["metrics"]["recall"] - float_recall
            if row["metrics"]["recall"] is not None and float_recall is not None
            else None
        )
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result = {
        "schema": SCHEMA,
        "edgexray_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_json(),
        "run_dir": str(run_dir) if run_dir else None,
        "out": str(out),
        "data": {
            "source": images.source,
            "split": images.split,
            "images": len(paths),
            "pneumonia": int(labels.sum()),
            "normal": int(len(labels) - labels.sum()),
            "skipped": skipped,
        },
        "machine": machine,
        "timer": timer,
        "runtime_peak_rss_mb": runtime_rss,
        "reference": reference,
        "thread_keys": thread_keys,
        "variants": rows,
        "targets": _targets(rows, thread_keys) if reference else [],
        "notes": [
            "latency: one image per call, inference only (set input, invoke, dequantize) and "
            "end to end (decode + preprocess + inference); benchmark.json also holds invoke() "
            "alone (invoke_ms); Keras runs model(x, training=False) in TensorFlow's default "
            f"thread pool (column '{KERAS_THREADS}')",
            "peak RSS: a fresh Python process running the standalone edge runtime (Keras: "
            f"TensorFlow) on {len(memory_images)} image(s) at {max(config.threads)} thread(s); "
            f"the edge runtime alone (imports and image decoding) peaks at {runtime_rss:.1f} MB",
            "metrics at each variant's own threshold; ratios (×) are to the float32 .tflite "
            "of this same benchmark",
            "parameters of a .tflite: constant weight tensors after BatchNormalization folding "
            "(fewer than Keras's count_params)",
        ],
        "plots": [],
        "seconds": None,
    }
    result["plots"] = _draw_plots(
        result, labels, {v.name: s for v, s in zip(variants, scores, strict=True)}, out
    )
    result["seconds"] = round(time.monotonic() - started, 1)
    artifacts.write_json(out / "benchmark.json", result)
    markdown = markdown_report(result)
    artifacts.atomic_write(out / "benchmark.md", lambda temporary: temporary.write_text(markdown))
    log.info("wrote %s in %.0f s", out, result["seconds"])
    return result


def _draw_plots(result: dict, labels, probabilities: dict, out: Path) -> list[str]:
    try:
        from edgexray.benchmarks import plots
    except ImportError:
        log.info("matplotlib is not installed: skipping plots (pip install edgexray[plots])")
        return []
    return plots.draw_all(result, labels, probabilities, out)


# --- the table ---------------------------------------------------------------------------


def _number(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}"


def table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the one summary table, every cell already a string."""
    keys = list(result["thread_keys"])
    if any(KERAS_THREADS in r["latency"] for r in result["variants"]):
        keys.append(KERAS_THREADS)
    headers = (
        ["variant", "method", "size KB", "gzip KB", "params", "sparsity", "load ms"]
        + [f"p50/p95/p99 ms @{k}" for k in keys]
        + [
            "e2e p50 ms",
            "peak RSS MB",
            "recall",
            "Δrecall vs float",
            "specificity",
            "accuracy",
            "AUC",
            "ECE",
            "size ×",
            "gzip ×",
        ]
        + [f"p50 × @{k}" for k in result["thread_keys"]]
        + ["RSS ×", "timing"]
    )
    rows = []
    for row in result["variants"]:
        latency, report, ratio = row["latency"], row["metrics"], row["ratio_to_float32"]
        first = next(iter(latency.values()))
        cells = [
            row["name"],
            row["method"],
            _number(row["size_bytes"] / 1024, 1),
            _number(row["gzip_bytes"] / 1024, 1),
            f"{row['parameters']:,}",
            _number(row["sparsity"], 3),
            _number(first["load_ms"], 1),
        ]
        for key in keys:
            stats = latency.get(key, {}).get("inference_ms")
            cells.append(
                "/".join(_number(stats[p], 3) for p in ("p50", "p95", "p99")) if stats else "—"
            )
        cells += [
            _number(first["end_to_end_ms"]["p50"], 2),
            _number(row["peak_rss_mb"], 1),
            _number(report["recall"], 4),
            _number(row["recall_minus_float"], 4),
            _number(report["specificity"], 4),
            _number(report["accuracy"], 4),
            _number(report["auc"], 4),
            _number(report["ece"], 4),
            _number(ratio["size"], 3),
            _number(ratio["gzip_size"], 3),
        ]
        cells += [_number(ratio["p50_latency"][k], 3) for k in result["thread_keys"]]
        cells.append(_number(ratio["peak_rss"], 3))
        unstable = [
            f"@{key} {'e2e' if part == 'end_to_end_ms' else 'inference'}"
            for key, stats in latency.items()
            for part in ("inference_ms", "end_to_end_ms")
            if stats[part]["unstable"]
        ]
        cells.append("UNSTABLE " + ", ".join(unstable) if unstable else "ok")
        rows.append(cells)
    return headers, rows


def format_table(headers: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Plain aligned text, or a GitHub markdown table."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )


def markdown_report(result: dict) -> str:
    """benchmark.md: the table, the targets, the data, the machine and the timer."""
    machine, timer, data_info = result["machine"], result["timer"], result["data"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [
        "# edgexray benchmark",
        "",
        f"Created {result['created']}; {data_info['images']} test images "
        f"({data_info['pneumonia']} pneumonia, {data_info['normal']} normal, "
        f"{data_info['skipped']} unreadable skipped) from {data_info['source']}. "
        f"Ratios (×) are to `{result['reference']}` in this same run.",
        "",
        format_table(*table(result), markdown=True),
        "",
    ]
    if result["targets"]:
        lines += ["## Targets", ""]
        for target in result["targets"]:
            state = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
            lines.append(f"- {target['target']}: {state} ({_number(target['ratio'], 3)})")
        lines.append("")
    lines += [
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable)",
        f"- OS: {machine['os']}; Python {machine['python']}",
        f"- Libraries: {versions}",
        f"- Load average at start / end: {machine['load_average_at_start']} / "
        f"{machine['load_average_at_end']}",
        f"- Timer: {timer['clock']} ({timer['implementation']}), stated resolution "
        f"{timer['resolution_s']:g} s, smallest measured step {timer['measured_min_step_ns']} ns",
        f"- Config: {json.dumps(result['config'])}",
        "",
        "## Notes",
        "",
        *[f"- {note}" for note in result["notes"]],
        f"- A timing is UNSTABLE when p99/p50 > {UNSTABLE_P99_OVER_P50:g}, max/min > "
        f"{UNSTABLE_MAX_OVER_MIN:g} or p50 is under {MIN_TICKS_PER_RUN} timer steps.",
    ]
    if result["plots"]:
        lines += ["", "## Plots", "", *[f"![{p}]({p})" for p in result["plots"]]]
    return "\n".join(lines) + "\n"
