"""`edgexray run`: train → prune → quantize → verify → benchmark → bundle, resumable.

Each stage records in stages.json a hash of its settings (chained with the stages before
it) and the sha256 of every file it wrote. Rerunning skips a stage only when its settings
are unchanged and every output it recorded is still there with the same content: a
deleted sidecar, a truncated model.keras or a corrupted .tflite makes its stage run
again. A stage that runs makes every later stage run too, since its outputs changed.
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
from edgexray.export.quantize import DEVICE_METHODS, METHODS, QuantizeConfig
from edgexray.pipeline import distribute
from edgexray.pipeline.prune import PruneConfig
from edgexray.pipeline.train import TrainConfig
from edgexray.pipeline.verify import GateLimits

log = logging.getLogger("edgexray")

STAGES = ("train", "prune", "quantize", "verify", "benchmark", "bundle")
# The stages that train, in which every multiworker process takes part; the chief alone
# runs the rest.
DISTRIBUTED_STAGES = ("train", "prune", "quantize")


def find_data(data: Path | None, download: bool = False) -> Path:
    """--data, else $EDGEXRAY_DATA, else ./data/chest_xray, else ../shared/data/chest_xray;
    else, with download, the public set fetched into ./data/chest_xray."""
    if data is not None:
        return Path(data)
    candidates = [os.environ.get("EDGEXRAY_DATA"), "data/chest_xray", "../shared/data/chest_xray"]
    for candidate in filter(None, candidates):
        if Path(candidate).is_dir():
            return Path(candidate).resolve()
    if download:
        from edgexray.pipeline import download as fetch

        log.info("no data found: downloading the public set into %s", fetch.DEFAULT_OUT)
        result = fetch.download(on_progress=fetch.progress_printer("downloading"))
        return result.folder.resolve()
    raise EdgexrayError(
        "no data: run `edgexray data download` (or `edgexray run --download`) to fetch the "
        "public set into ./data/chest_xray, or pass --data DIR or set EDGEXRAY_DATA to a "
        "folder with NORMAL/ and PNEUMONIA/"
    )


@dataclass(frozen=True)
class RunConfig:
    """Settings of every stage of the whole job."""

    train: TrainConfig
    prune: PruneConfig = field(default_factory=PruneConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    methods: tuple[str, ...] = METHODS
    gate: GateLimits = field(default_factory=GateLimits)
    benchmark: BenchmarkConfig = field(
        default_factory=lambda: BenchmarkConfig(threads=(1, 2), warmup=10, runs=100)
    )
    targets: tuple[str, ...] = TARGETS
    calibrate_on: str | None = None  # a site's NORMAL/ PNEUMONIA/ sample for the device model

    def __post_init__(self):
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise EdgexrayError(f"unknown methods {sorted(unknown)}: choose from {METHODS}")
        if len({self.train.distribute, self.prune.distribute, self.quantize.distribute}) > 1:
            raise EdgexrayError("train, prune and quantize must use the same distribute")

    def stage_settings(self) -> dict[str, dict]:
        """What each stage's output depends on, beyond the stages before it."""
        benchmark = dataclasses.asdict(self.benchmark)
        return {
            "train": _hashed(self.train),
            "prune": _hashed(self.prune),
            "quantize": {**_hashed(self.quantize), "methods": list(self.methods)},
            "verify": dataclasses.asdict(self.gate),
            "benchmark": {k: benchmark[k] for k in ("threads", "warmup", "runs")},
            "bundle": {
                "targets": list(self.targets),
                # Only when given, so runs without it keep their recorded hashes.
                **({"calibrate_on": self.calibrate_on} if self.calibrate_on else {}),
            },
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
    """What a stage writes; a folder stands for every file below it."""
    return [run_dir / name for name in {
        "train": [artifacts.CONFIG, artifacts.MANIFEST, artifacts.MODEL, artifacts.METRICS],
        "prune": [artifacts.PRUNED, artifacts.PRUNE_REPORT],
        "quantize": [artifacts.QUANTIZE_REPORT]
        + [f"{artifacts.TFLITE_DIR}/{m}{suffix}" for m in config.methods
           for suffix in (".tflite", ".json")],
        "verify": [artifacts.VERIFY_REPORT],
        "benchmark": [artifacts.BENCHMARK_DIR],
        # Without a passing full-int8 variant nothing is bundled: both are then absent.
        "bundle": [artifacts.SELECTED, artifacts.BUNDLES_DIR]
        + ([artifacts.CALIBRATION_REPORT, artifacts.CALIBRATED_DIR] if config.calibrate_on else []),
    }[stage]]  # fmt: skip


def output_hashes(stage: str, run_dir: Path, config: RunConfig) -> dict[str, str]:
    """sha256 of every file a stage wrote, by path relative to the run directory."""
    files = []
    for path in _outputs(stage, run_dir, config):
        if path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file()]
        elif path.is_file():
            files.append(path)
    return {str(p.relative_to(run_dir)): artifacts.sha256(p) for p in files}


def outputs_intact(stage: str, run_dir: Path, config: RunConfig, recorded: dict | None) -> bool:
    """True when every file the stage recorded is there with the same content (files a
    user added later to a folder do not count)."""
    if not isinstance(recorded, dict) or (not recorded and stage != "bundle"):
        return False  # an older record that did not hash its outputs proves nothing
    for relative, digest in recorded.items():
        path = run_dir / relative
        if not path.is_file() or artifacts.sha256(path) != digest:
            log.warning("%s: %s is missing or changed since it was written", stage, relative)
            return False
    return True


def calibrate_selected(run_dir: Path, selected: dict, config: RunConfig) -> Path:
    """The model to bundle: the selected one, calibrated on config.calibrate_on if given.

    Without calibrate_on, an earlier run's calibration is removed, so nothing stale ships
    or reaches the report.
    """
    from edgexray.pipeline.calibrate import CalibrateConfig, calibrate_run_model

    model = run_dir / selected["model"]
    if not config.calibrate_on:
        shutil.rmtree(run_dir / artifacts.CALIBRATED_DIR, ignore_errors=True)
        (run_dir / artifacts.CALIBRATION_REPORT).unlink(missing_ok=True)
        return model
    settings = CalibrateConfig(target_recall=config.train.target_recall)
    report = calibrate_run_model(run_dir, model, Path(config.calibrate_on), settings)
    return Path(report["calibrated_model"])


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
    if name == "multiworker":
        # Every process must run the same distributed stages in step, and a worker keeps
        # nothing between jobs, so a multiworker job redoes everything from training.
        force = STAGES
    unknown = set(force) - set(STAGES)
    if unknown:
        raise EdgexrayError(f"unknown stage {sorted(unknown)[0]!r}: choose from {STAGES}")
    if not Path(config.train.data).is_dir():
        # Before anything is written: a bad --data must not leave a run directory behind.
        raise EdgexrayError(f"data folder not found: {config.train.data}")
    if config.calibrate_on:  # a bad site folder fails now, not after training
        from edgexray.pipeline.calibrate import CalibrateConfig, check_site

        check_site(Path(config.calibrate_on), CalibrateConfig(config.train.target_recall))
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
                verify_report = verify_run(run_dir, config.gate)
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
            model = calibrate_selected(run_dir, selected, config)
            if model != run_dir / selected["model"]:
                selected["calibrated_model"] = model.relative_to(run_dir).as_posix()
            artifacts.write_json(run_dir / artifacts.SELECTED, selected)
            for target in config.targets:
                make_bundle(
                    BundleConfig(
                        model=str(model),
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
        entry = record.get(stage) if isinstance(record.get(stage), dict) else {}
        done = (
            not redo
            and stage not in force
            and entry.get("hash") == hashes[stage]
            and outputs_intact(stage, run_dir, config, entry.get("outputs"))
        )
        if done:
            if stage == "verify":
                verify_report = artifacts.read_json(run_dir / artifacts.VERIFY_REPORT)
                if not verify_report.get("passed", True):
                    done = False  # a failed gate is never "done": check it again
            if done:
                statuses[stage] = {"status": "skipped (unchanged)", "seconds": entry.get("seconds")}
                if on_stage:
                    on_stage(index, stage, "skip")
                continue
        redo = True
        if on_stage:
            on_stage(index, stage, "start")
        if record.pop(stage, None) is not None:
            artifacts.write_json(record_path, record)
        started = time.monotonic()
        run_stage(stage)
        seconds = round(time.monotonic() - started, 1)
        outputs = output_hashes(stage, run_dir, config)
        record[stage] = {"hash": hashes[stage], "seconds": seconds, "outputs": outputs}
        artifacts.write_json(record_path, record)
        statuses[stage] = {"status": "ran", "seconds": seconds}
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
