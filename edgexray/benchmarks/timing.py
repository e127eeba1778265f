"""Timing a model: the clock, repeated calls with the collector paused, and the
percentiles and stability of what was measured."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgexray import artifacts
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.preprocess import preprocess

KERAS_THREADS = "tf"  # Keras runs in TensorFlow's own thread pool, set once per process
# A timed run is not trusted when its tail or its spread is this wide: on a quiet
# machine p99 stays within 2x of p50 and max within a few times min.
UNSTABLE_P99_OVER_P50 = 3.0
UNSTABLE_MAX_OVER_MIN = 10.0
# A median below this many timer ticks is too short for the timer to resolve.
MIN_TICKS_PER_RUN = 100


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


def tflite_latency(model, file: str, threads: int, config, step_ns: int):
    """Load time, then inference-only and end-to-end timings of one .tflite."""
    # The device's own path: Classifier (sidecar check, cached tensor details, the uint8
    # fast path for full-int8 models), so what is timed is what infer.py does.
    started = time.perf_counter()
    classifier = Classifier(model.path, threads)
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


def keras_latency(path: Path, input_spec: dict, file: str, config, step_ns: int):
    """The same timings for a Keras model called eagerly on one image."""
    from edgexray.compat import keras  # noqa: F401  (TF import outside the load timing)

    started = time.perf_counter()
    model = artifacts.load_keras(path)
    load_ms = (time.perf_counter() - started) * 1e3
    batch = preprocess(file, input_spec)[np.newaxis]
    inference = time_calls(lambda i: model(batch, training=False), config.warmup, config.runs)
    end_to_end = time_calls(
        lambda i: model(preprocess(file, input_spec)[np.newaxis], training=False),
        min(config.warmup, 2),
        config.runs,
    )
    return model, {
        "load_ms": load_ms,
        "inference_ms": summarize(inference, step_ns),
        "end_to_end_ms": summarize(end_to_end, step_ns),
    }
