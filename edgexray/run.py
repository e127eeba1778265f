"""`edgexray run`: train → prune → quantize → verify → benchmark → bundle, resumable.

Each stage records a hash of its settings (chained with the stages before it) in
stages.json. Rerunning skips a stage whose hash is unchanged and whose outputs exist; a
stage that runs makes every later stage run too, since its outputs changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgexray import __version__, artifacts
from edgexray.benchmarks.harness import BenchmarkConfig
from edgexray.errors import EdgexrayError
from edgexray.export.bundle import TARGETS, BundleConfig
from edgexray.export.quantize import METHODS, QuantizeConfig
from edgexray.pipeline import distribute
from edgexray.pipeline.prune import PruneConfig
from edgexray.pipeline.train import TrainConfig

log = logging.getLogger("edgexray")

STAGES = ("train", "prune", "quantize", "verify", "benchmark", "bundle")
# The stages that train, in which every multiworker process takes part; the chief alone
# runs the rest.
DISTRIBUTED_STAGES = ("train", "prune", "quantize")
# Full-integer variants with uint8 input/output: the ones a phone or a Pi should run.
DEVICE_METHODS = ("int8", "qat", "pqat", "pruned-int8")
KAGGLE_URL = "https://www.kaggle.com/datasets/paultimothymooney/chest-xray-pneumonia"


def find_data(data: Path | None) -> Path:
    """--data, else $EDGEXRAY_DATA, else ./data/chest_xray, else ../shared/data/chest_xray."""
    if data is not None:
        return Path(data)
    candidates = [os.environ.get("EDGEXRAY_DATA"), "data/chest_xray", "../shared/data/chest_xray"]
    for candidate in filter(None, candidates):
        if Path(candidate).is_dir():
            return Path(candidate).resolve()
    raise EdgexrayError(
        "no data: pass --data DIR or set EDGEXRAY_DATA to a folder with NORMAL/ and PNEUMONIA/ "
        f"(for example the Kaggle 'Chest X-Ray Images (Pneumonia)' set, {KAGGLE_URL})"
    )


@dataclass(frozen=True)
class RunConfig:
    """Settings of every stage of the whole job."""

    train: TrainConfig
    prune: PruneConfig = field(default_factory=PruneConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    methods: tuple[str, ...] = METHODS
    max_recall_drop: float = 0.0
    benchmark: BenchmarkConfig = field(
        default_factory=lambda: BenchmarkConfig(threads=(1, 2), warmup=10, runs=100)
    )
    targets: tuple[str, ...] = TARGETS

    def __post_init__(self):
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise EdgexrayError(f"unknown methods {sorted(unknown)}: choose from {METHODS}")
        if not 0 <= self.max_recall_drop < 1:
            raise EdgexrayError("max_recall_drop must be in [0, 1)")
        if len({self.train.distribute, self.prune.distribute, self.quantize.distribute}) > 1:
            raise EdgexrayError("train, prune and quantize must use the same distribute")

    def stage_settings(self) -> dict[str, dict]:
        """What each stage's output depends on, beyond the stages before it."""
        benchmark = dataclasses.asdict(self.benchmark)
        return {
            "train": _hashed(self.train),
            "prune": _hashed(self.prune),
            "quantize": {**_hashed(self.quantize), "methods": list(self.methods)},
            "verify": {"max_recall_drop": self.max_recall_drop},
            "benchmark": {k: benchmark[k] for k in ("threads", "warmup", "runs")},
            "bundle": {"targets": list(self.targets)},
        }


def _hashed(stage_config) -> dict:
    """A stage's settings as hashed. distribute "none" is left out, so run directories made
    before --distribute existed are still resumed, not redone."""
    values = dataclasses.asdict(stage_config)
    if values.get("distribute") == "none":
        del values["distribute"]
    return values


def stage_hashes(config: RunConfig) -> dict[str, str]:
    """Each stage's hash covers its own settings and every earlier stage's."""
    hashes, chain = {}, __version__
    for stage, settings in config.stage_settings().items():
        text = chain + stage + json.dumps(settings, sort_keys=True, default=list)
        chain = hashes[stage] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return hashes


def _outputs(stage: str, run_dir: Path, config: RunConfig) -> list[Path]:
    tflite = run_dir / artifacts.TFLITE_DIR
    return {
        "train": [run_dir / n for n in (artifacts.MODEL, artifacts.METRICS, artifacts.MANIFEST)],
        "prune": [run_dir / artifacts.PRUNED],
        "quantize": [tflite / f"{m}.tflite" for m in config.methods],
        "verify": [run_dir / artifacts.VERIFY_REPORT],
        "benchmark": [run_dir / artifacts.BENCHMARK_DIR / "benchmark.json"],
        "bundle": [run_dir / artifacts.BUNDLES_DIR / t / "SHA256SUMS" for t in config.targets],
    }[stage]


def select_device_model(run_dir: Path, verify_report: dict) -> dict:
    """The full-int8 variant to deploy: passing the gate, best val specificity, then smallest.

    Choosing on val, not test, keeps the test split an honest estimate.
    """
    quantized = artifacts.read_json(run_dir / artifacts.QUANTIZE_REPORT)["variants"]
    passed = {Path(c["model"]).stem for c in verify_report["candidates"] if c.get("passed")}
    choices = [m for m in DEVICE_METHODS if m in passed and m in quantized]
    if not choices:
        raise EdgexrayError("no full-int8 variant passed the recall gate: nothing to deploy")
    best = max(
        choices,
        key=lambda m: (quantized[m]["val"]["specificity"], -quantized[m]["gzip_bytes"]),
    )
    return {
        "method": best,
        "model": f"{artifacts.TFLITE_DIR}/{best}.tflite",
        "why": "passed the recall gate; highest val specificity at the target recall, "
        "then smallest gzip size, among " + ", ".join(choices),
    }


def run(
    config: RunConfig,
    run_dir: Path,
    force: tuple[str, ...] = (),
    verbose: int = 1,
    on_stage: Callable[[int, str, str], None] | None = None,
) -> dict:
    """Run every stage that is not already done with the same settings.

    Args:
        force: stages to redo even if done (later stages are redone too).
        on_stage: called as on_stage(index, stage, "start" | "skip" | "done").

    Returns:
        A summary: per-stage status and seconds, the gate result, the selected model.

    Raises:
        RecallRegressionError: the gate failed (after benchmark and bundling of the
            variants that passed, so the report shows what happened).
    """
    from edgexray.benchmarks.harness import benchmark
    from edgexray.export.bundle import make_bundle
    from edgexray.export.quantize import quantize
    from edgexray.pipeline.prune import prune
    from edgexray.pipeline.train import train
    from edgexray.pipeline.verify import RecallRegressionError, verify_run

    name = config.train.distribute
    run_dir = distribute.output_dir(run_dir, name)  # a worker's is private
    run_dir.mkdir(parents=True, exist_ok=True)
    if name == "multiworker":
        # Every process must run the same distributed stages in step, and a worker keeps
        # nothing between jobs, so a multiworker job redoes everything from training.
        force = STAGES
    unknown = set(force) - set(STAGES)
    if unknown:
        raise EdgexrayError(f"unknown stage {sorted(unknown)[0]!r}: choose from {STAGES}")
    record_path = run_dir / artifacts.STAGE_RECORD
    record = artifacts.read_json(record_path) if record_path.is_file() else {}
    hashes = stage_hashes(config)
    gate_error = None
    verify_report = None

    def run_stage(stage):
        nonlocal gate_error, verify_report
        if stage == "train":
            summary = train(config.train, run_dir, verbose=verbose)
            if summary["interrupted"]:
                raise KeyboardInterrupt
        elif stage == "prune":
            prune(run_dir, config.prune, verbose=verbose)
        elif stage == "quantize":
            quantize(run_dir, config.methods, config.quantize, verbose=verbose)
        elif stage == "verify":
            try:
                verify_report = verify_run(run_dir, config.max_recall_drop)
            except RecallRegressionError as err:
                verify_report, gate_error = err.report, err
        elif stage == "benchmark":
            benchmark([run_dir], dataclasses.replace(config.benchmark, out=None))
        elif stage == "bundle":
            try:
                selected = select_device_model(run_dir, verify_report)
            except EdgexrayError:
                if gate_error is None:
                    raise
                # Nothing passed the gate: nothing to ship (not even an earlier run's
                # bundles), but the report must still say why.
                log.warning("no full-int8 variant passed the recall gate: no bundle written")
                (run_dir / artifacts.SELECTED).unlink(missing_ok=True)
                shutil.rmtree(run_dir / artifacts.BUNDLES_DIR, ignore_errors=True)
                return
            artifacts.write_json(run_dir / artifacts.SELECTED, selected)
            for target in config.targets:
                make_bundle(
                    BundleConfig(
                        model=str(run_dir / selected["model"]),
                        target=target,
                        out=str(run_dir / artifacts.BUNDLES_DIR / target),
                        zip=True,
                    )
                )

    redo = False
    statuses = {}
    for index, stage in enumerate(STAGES, 1):
        if not distribute.is_chief(name) and stage not in DISTRIBUTED_STAGES:
            return {"run_dir": str(run_dir), "stages": statuses, "worker": True}
        done = record.get(stage, {}).get("hash") == hashes[stage] and all(
            p.exists() for p in _outputs(stage, run_dir, config)
        )
        if done and not redo and stage not in force:
            if stage == "verify":
                verify_report = artifacts.read_json(run_dir / artifacts.VERIFY_REPORT)
                if not verify_report.get("passed", True):
                    done = False  # a failed gate is never "done": check it again
            if done:
                statuses[stage] = {"status": "skipped (unchanged)", **record[stage]}
                if on_stage:
                    on_stage(index, stage, "skip")
                continue
        redo = True
        if on_stage:
            on_stage(index, stage, "start")
        record.pop(stage, None)
        artifacts.write_json(record_path, record)
        started = time.monotonic()
        run_stage(stage)
        seconds = round(time.monotonic() - started, 1)
        record[stage] = {"hash": hashes[stage], "seconds": seconds}
        artifacts.write_json(record_path, record)
        statuses[stage] = {"status": "ran", **record[stage]}
        if on_stage:
            on_stage(index, stage, "done")

    selected_path = run_dir / artifacts.SELECTED
    summary = {
        "run_dir": str(run_dir),
        "stages": statuses,
        "gate_passed": gate_error is None,
        "selected": artifacts.read_json(selected_path) if selected_path.is_file() else None,
    }
    from edgexray.report import write_report

    write_report(run_dir, config, summary)
    if gate_error is not None:
        raise gate_error
    return summary


def copy_reference_model(run_dir: Path, destination: Path) -> Path:
    """Copy the run's selected device model and its sidecar to destination/edgexray-int8.*."""
    selected = artifacts.read_json(Path(run_dir) / artifacts.SELECTED)
    source = Path(run_dir) / selected["model"]
    target = Path(destination) / "edgexray-int8.tflite"
    artifacts.atomic_write(target, lambda temporary: shutil.copyfile(source, temporary))
    sidecar = artifacts.read_json(source.with_suffix(".json"))
    artifacts.write_json(target.with_suffix(".json"), {**sidecar, "model_file": target.name})
    return target
