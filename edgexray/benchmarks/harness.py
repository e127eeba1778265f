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

This module gathers the measurements; each kind lives in its own module: timing.py
(clock, percentiles, latency), memory.py (peak RSS in a fresh process), machine.py,
ratios.py (ratios to float32 and the compression targets) and tables.py (the summary
table and benchmark.md).
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from edgexray import __version__, artifacts
from edgexray.benchmarks import memory, ratios, tables, timing
from edgexray.benchmarks.machine import machine_info
from edgexray.benchmarks.timing import KERAS_THREADS
from edgexray.edge_runtime import RUNTIME_ROOT
from edgexray.edge_runtime.interpreter import MAX_THREADS
from edgexray.edge_runtime.options import option
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.errors import EdgexrayError, check_config
from edgexray.export import convert
from edgexray.export.quantize import METHODS
from edgexray.formatting import number
from edgexray.pipeline import evaluate, progress

log = logging.getLogger("edgexray")

SCHEMA = "edgexray.benchmark/1"


class VariantRow(TypedDict, total=False):
    """One model in benchmark.json. Keras rows time one thread key (KERAS_THREADS) and have
    no peak_rss_above_runtime_mb; ratio_to_float32 is added when a float32 .tflite was
    measured too."""

    name: str
    path: str
    kind: str  # "keras" or "tflite"
    method: str | None
    threshold: float
    size_bytes: int
    gzip_bytes: int
    latency: dict[str, dict]  # thread key -> inference_ms / end_to_end_ms / invoke_ms stats
    parameters: int
    sparsity: float | None
    peak_rss_mb: float
    peak_rss_above_runtime_mb: float | None
    metrics: evaluate.ClinicalSummary  # at the variant's own threshold
    unstable: bool
    recall_minus_float: float | None
    ratio_to_float32: dict[str, dict | float | None]


class BenchmarkResult(TypedDict):
    """benchmark.json (schema SCHEMA)."""

    schema: str
    edgexray_version: str
    created: str
    config: dict
    run_dir: str | None
    out: str
    data: dict  # source, split, images, pneumonia, normal, skipped
    machine: dict
    timer: dict
    runtime_peak_rss_mb: float
    reference: str | None
    thread_keys: list[str]
    variants: list[VariantRow]
    targets: list[dict]  # target, ratio, limit, met (None: not measured)
    notes: list[str]
    plots: list[str]
    seconds: float | None


OUT_DIR = artifacts.BENCHMARK_DIR
PLOTS = ("size_vs_recall.png", "latency.png", "confusion_matrices.png", "roc_curves.png")


def parse_thread_counts(text: str) -> tuple[int, ...]:
    """'1,2' → (1, 2)."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise EdgexrayError(f"--threads wants counts like 1,2, not {text!r}") from None


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

    threads: tuple[int, ...] = option(
        (1, 2), "Interpreter thread counts to time, e.g. 1,2.", parse=parse_thread_counts
    )
    warmup: int = option(10, "Untimed runs before timing.")
    runs: int = option(100, "Timed runs per thread count.")
    out: str | None = None
    data: str | None = None
    memory_images: int = 5

    def __post_init__(self):
        object.__setattr__(self, "threads", tuple(self.threads))
        # Capped as predict caps it: a huge count crashes the interpreter (a segfault).
        counts_ok = all(isinstance(t, int) and 1 <= t <= MAX_THREADS for t in self.threads)
        checks = {
            f"threads must be one or more distinct counts from 1 to {MAX_THREADS}": (
                counts_ok and len(self.threads) > 0 and len(set(self.threads)) == len(self.threads)
            ),
            "warmup must be >= 0": self.warmup >= 0,
            "runs must be >= 2": self.runs >= 2,
            "memory_images must be >= 1": self.memory_images >= 1,
        }
        check_config("benchmark config", checks)

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
    return Variant(model, str(load_sidecar(path).get("method", path.stem)))


def _order(variant: Variant) -> tuple:
    if variant.kind == "keras":
        return (0, 0, variant.name)
    # The method table's order; unknown methods follow by name.
    rank = METHODS.index(variant.method) if variant.method in METHODS else 99
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
        keras_model, latency = timing.keras_latency(
            model.path, model.input_spec, file, config, step_ns
        )
        return {"latency": {KERAS_THREADS: latency}, **keras_weights(keras_model)}
    latency = {
        str(t): timing.tflite_latency(model, file, t, config, step_ns) for t in config.threads
    }
    return {"latency": latency, **convert.weight_stats(Path(model.path).read_bytes())}


def benchmark(
    models: Sequence[Path | str],
    config: BenchmarkConfig,
    paths: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
) -> BenchmarkResult:
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
    artifacts.require_writable(out)  # before minutes of measuring, not after
    _refuse_foreign_outputs(out)
    machine = machine_info()
    timer = timing.timer_info()
    step_ns = max(timer["measured_min_step_ns"], 1)

    # The evaluation code decodes each test image once for every variant.
    scored = evaluate.score([v.model for v in variants], images)
    if not len(scored):
        raise EdgexrayError(f"none of the {len(images.paths)} test images is readable")
    paths, labels, scores = scored.paths, scored.labels, scored.probabilities
    skipped = len(scored.skipped)
    log.info("%d test images (%d pneumonia), %d skipped", len(paths), int(labels.sum()), skipped)

    # Timings repeat one image of median file size: a typical film, and repeats of one
    # image vary only with the machine, which is what the stability check looks at.
    typical = sorted(paths, key=lambda path: (os.path.getsize(path), path))[len(paths) // 2]
    memory_images = paths[: config.memory_images]
    runtime_rss = memory.peak_rss_mb(
        memory.EDGE_PEAK_RSS,
        {
            "runtime": str(RUNTIME_ROOT),
            "model": None,
            "threads": 1,
            "images": memory_images,
            "input": variants[0].model.input_spec,
        },
    )
    thread_keys = [str(t) for t in config.threads]
    rows = []
    with progress.task("benchmark", len(variants), "models") as bar:
        for variant, probabilities in zip(variants, scores, strict=True):
            model = variant.model
            log.info("benchmarking %s", variant.name)
            measured = _measure(variant, typical, config, step_ns)
            job = {
                "runtime": str(RUNTIME_ROOT),
                "model": str(model.path),
                "images": memory_images,
                "threads": max(config.threads),
                "input": model.input_spec,
            }
            rss = memory.peak_rss_mb(
                memory.KERAS_PEAK_RSS if variant.kind == "keras" else memory.EDGE_PEAK_RSS, job
            )
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
                number(report["recall"], 4, "—"),
                rss,
            )
            bar.advance()
    reference = ratios.add_ratios(rows, thread_keys)
    float_recall = next((r["metrics"]["recall"] for r in rows if r["kind"] == "keras"), None)
    for row in rows:
        row["recall_minus_float"] = (
            row["metrics"]["recall"] - float_recall
            if row["metrics"]["recall"] is not None and float_recall is not None
            else None
        )
    machine["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result: BenchmarkResult = {
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
        "targets": ratios.targets(rows, thread_keys) if reference else [],
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
    markdown = tables.markdown_report(result)
    artifacts.atomic_write(out / "benchmark.md", lambda temporary: temporary.write_text(markdown))
    log.info("wrote %s in %.0f s", out, result["seconds"])
    return result


def _refuse_foreign_outputs(out: Path) -> None:
    """Refuse an --out holding a benchmark.md, benchmark.json or plot that an earlier
    benchmark did not write (an edgexray benchmark.json there says it did).

    Raises:
        EdgexrayError: out holds such a file of the user's.
    """
    ours = out / "benchmark.json"
    if ours.is_file():
        try:
            if artifacts.read_json(ours).get("schema") == SCHEMA:
                return
        except EdgexrayError:
            pass
    theirs = [name for name in ("benchmark.json", "benchmark.md", *PLOTS) if (out / name).exists()]
    if theirs:
        raise EdgexrayError(
            f"{out} holds {', '.join(theirs)} that no edgexray benchmark wrote (no edgexray "
            "benchmark.json there): choose another --out"
        )


def _draw_plots(result: dict, labels, probabilities: dict, out: Path) -> list[str]:
    try:
        from edgexray.benchmarks import plots
    except ImportError:
        log.info("matplotlib is not installed: skipping plots (pip install edgexray[plots])")
        return []
    return plots.draw_all(result, labels, probabilities, out)
