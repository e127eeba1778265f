"""`edgexray run`: train → prune → quantize → verify → benchmark → calibrate → bundle,
resumable; every stage is one row of STAGES.

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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

from edgexray import __version__, artifacts
from edgexray.benchmarks.harness import BenchmarkConfig
from edgexray.edge_runtime.options import option
from edgexray.errors import EdgexrayError
from edgexray.export.bundle import TARGETS, BundleConfig
from edgexray.export.quantize import DEVICE_METHODS, METHODS, QuantizeConfig, read_report
from edgexray.pipeline import distribute
from edgexray.pipeline.backbones import BACKBONES, COMPACT
from edgexray.pipeline.prune import PruneConfig, prune_config
from edgexray.pipeline.train import TrainConfig
from edgexray.pipeline.verify import GateLimits, RecallRegressionError, VerifyReport

log = logging.getLogger("edgexray")


def find_data(data: Path | None, download: bool = False) -> Path:
    """--data, else $EDGEXRAY_DATA, else ./data/chest_xray, else ../shared/data/chest_xray;
    else, with download, the public set fetched into ./data/chest_xray."""
    if data is not None:
        return Path(data)
    chosen = os.environ.get("EDGEXRAY_DATA")
    if chosen and not Path(chosen).is_dir():  # never fall back silently to other data
        raise EdgexrayError(f"EDGEXRAY_DATA={chosen} is not a folder: fix it or pass --data DIR")
    candidates = [chosen, "data/chest_xray", "../shared/data/chest_xray"]
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
    prune: PruneConfig | None = None  # None: prune_config(train), the backbone's
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    methods: tuple[str, ...] | None = None  # None: the backbone's run_methods
    gate: GateLimits = field(default_factory=GateLimits)
    benchmark: BenchmarkConfig = field(
        default_factory=lambda: BenchmarkConfig(threads=(1, 2), warmup=10, runs=100)
    )
    targets: tuple[str, ...] = TARGETS
    calibrate_on: str | None = None  # a site's NORMAL/ PNEUMONIA/ sample for the device model
    # False: a variant that fails the gate is left out of the bundles and named, and the run
    # succeeds when the model it deploys passed. True: any failing variant fails the run
    # (for a pipeline that needs every variant). Decides no output, so it is not hashed.
    strict: bool = option(
        False,
        "Exit 1 when any variant fails the gate (default: only when no model passed; "
        "failing variants are left out of the bundles and named).",
    )

    def __post_init__(self):
        backbone = BACKBONES[self.train.backbone]
        if self.prune is None:
            object.__setattr__(self, "prune", prune_config(self.train))
        if self.methods is None:
            object.__setattr__(self, "methods", backbone.run_methods or METHODS)
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise EdgexrayError(f"unknown methods {sorted(unknown)}: choose from {METHODS}")
        if len({self.train.distribute, self.prune.distribute, self.quantize.distribute}) > 1:
            raise EdgexrayError("train, prune and quantize must use the same distribute")

    def stage_settings(self) -> dict[str, dict]:
        """What each stage's output depends on, beyond the stages before it."""
        return {stage.name: stage.settings(self) for stage in STAGES}


def _hashed(stage_config) -> dict:
    """A stage's settings as hashed. distribute "none" and backbone "compact" are left out,
    so run directories made before --distribute or --backbone existed are still resumed,
    not redone."""
    values = dataclasses.asdict(stage_config)
    if values.get("distribute") == "none":
        del values["distribute"]
    if values.get("backbone") == COMPACT:
        del values["backbone"]
    return values


# A runner does its stage's work in the run directory, reading what earlier stages left
# there (a resumed run has nothing else). It returns an error that must still be raised
# once the later stages have run (the gate's), or None.
Runner = Callable[["RunConfig", Path, int], "EdgexrayError | None"]


@dataclass(frozen=True)
class Stage:
    """One step of `edgexray run`: everything the runner, the hashing, the resume check and
    the cleanup after retraining need to know about it."""

    name: str
    settings: Callable[[RunConfig], dict]  # what its outputs depend on, beyond earlier stages
    # What it writes, relative to the run directory; a folder stands for every file below
    # it, and "{method}" for each quantization method of the run.
    outputs: tuple[str, ...]
    runner: Runner
    distributed: bool = False  # every multiworker process takes part; else the chief alone
    # False: later stages' hashes do not include this one's, because a later stage's
    # settings already hold all of its own.
    chained: bool = True
    optional_outputs: bool = False  # writes nothing when no variant passed the gate
    # Checked after the hash and the outputs: False makes the stage run again anyway.
    still_done: Callable[[Path], bool] = lambda run_dir: True

    def output_paths(self, run_dir: Path, config: RunConfig) -> list[Path]:
        """Its outputs in run_dir for this config's methods."""
        return [
            run_dir / name.format(method=method)
            for name in self.outputs
            for method in (config.methods if "{method}" in name else [""])
        ]


def _train(config: RunConfig, run_dir: Path, verbose: int) -> None:
    from edgexray.pipeline.train import train

    if train(config.train, run_dir, verbose=verbose)["interrupted"]:
        raise KeyboardInterrupt


def _prune(config: RunConfig, run_dir: Path, verbose: int) -> None:
    from edgexray.pipeline.prune import prune

    prune(run_dir, config.prune, verbose=verbose)


def _quantize(config: RunConfig, run_dir: Path, verbose: int) -> None:
    from edgexray.export.quantize import quantize

    quantize(run_dir, config.methods, config.quantize, verbose=verbose)


def _verify(config: RunConfig, run_dir: Path, verbose: int) -> EdgexrayError | None:
    from edgexray.pipeline.verify import RecallRegressionError, verify_run

    try:
        verify_run(run_dir, config.gate)
    except RecallRegressionError as err:
        # verify.json holds the failed report; benchmark and bundle still run, so the run's
        # report shows what happened, and the error is raised at the end.
        return err
    return None


def _benchmark(config: RunConfig, run_dir: Path, verbose: int) -> None:
    from edgexray.benchmarks.harness import benchmark

    benchmark([run_dir], dataclasses.replace(config.benchmark, out=None))


def _calibrate(config: RunConfig, run_dir: Path, verbose: int) -> None:
    selected = device_model(run_dir)
    if selected is not None:
        calibrate_selected(run_dir, selected, config)


def _bundle(config: RunConfig, run_dir: Path, verbose: int) -> None:
    from edgexray.export.bundle import make_bundle

    selected = device_model(run_dir)
    if selected is None:
        # Nothing passed the gate: nothing to ship (not even an earlier run's bundles), but
        # the report must still say why.
        log.warning("no full-int8 variant passed the recall gate: no bundle written")
        artifacts.remove_outputs(run_dir, names=(artifacts.SELECTED, artifacts.BUNDLES_DIR))
        return
    model = run_dir / selected["model"]
    if config.calibrate_on:
        calibration = artifacts.read_json(run_dir / artifacts.CALIBRATION_REPORT)
        model = run_dir / artifacts.CALIBRATED_DIR / Path(calibration["calibrated_model"]).name
        selected["calibrated_model"] = model.relative_to(run_dir).as_posix()
    artifacts.write_json(run_dir / artifacts.SELECTED, selected)
    for target in config.targets:
        out = str(run_dir / artifacts.BUNDLES_DIR / target)
        make_bundle(BundleConfig(model=str(model), target=target, out=out, zip=True))


def _calibration(config: RunConfig) -> dict:
    # Only when given, so runs without it keep their recorded hashes.
    return {"calibrate_on": config.calibrate_on} if config.calibrate_on else {}


def _gate_passed(run_dir: Path) -> bool:
    report: VerifyReport = artifacts.read_json(run_dir / artifacts.VERIFY_REPORT)
    return report["passed"]


class NothingToDeploy(RecallRegressionError):
    """No full-int8 variant passed the gate: the run has no model to ship (exit 1)."""

    def __init__(self, report: VerifyReport):
        super().__init__(report)
        self.args = (f"no full-int8 variant passed the recall gate, nothing deployed: {self}",)


class Excluded(TypedDict):
    """A variant that failed the gate: left out of the bundles, named with its reasons."""

    name: str
    failures: list[str]


def excluded_variants(run_dir: Path) -> list[Excluded]:
    """The variants of the run's verify.json that failed the gate, with why."""
    path = Path(run_dir) / artifacts.VERIFY_REPORT
    if not path.is_file():
        return []
    report: VerifyReport = artifacts.read_json(path)
    return [
        {"name": c["name"], "failures": list(c.get("failures") or ["failed the gate"])}
        for c in report["candidates"]
        if not c["passed"]
    ]


def excluded_lines(excluded: list[Excluded]) -> list[str]:
    """One line per variant that failed the gate: its name and every reason."""
    return [
        f"excluded {variant['name']}: failed the gate on the test split: "
        + "; ".join(variant["failures"])
        for variant in excluded
    ]


STAGES = (
    Stage(
        "train",
        lambda c: _hashed(c.train),
        (artifacts.CONFIG, artifacts.MANIFEST, artifacts.MODEL, artifacts.METRICS),
        _train,
        distributed=True,
    ),
    Stage(
        "prune",
        lambda c: _hashed(c.prune),
        (artifacts.PRUNED, artifacts.PRUNE_REPORT),
        _prune,
        distributed=True,
    ),
    Stage(
        "quantize",
        lambda c: {**_hashed(c.quantize), "methods": list(c.methods)},
        (
            artifacts.QUANTIZE_REPORT,
            f"{artifacts.TFLITE_DIR}/{{method}}.tflite",
            f"{artifacts.TFLITE_DIR}/{{method}}.json",
        ),
        _quantize,
        distributed=True,
    ),
    # A failed gate is never done: it is checked again.
    Stage(
        "verify",
        lambda c: dataclasses.asdict(c.gate),
        (artifacts.VERIFY_REPORT,),
        _verify,
        still_done=_gate_passed,
    ),
    Stage(
        "benchmark",
        lambda c: {k: dataclasses.asdict(c.benchmark)[k] for k in ("threads", "warmup", "runs")},
        (artifacts.BENCHMARK_DIR,),
        _benchmark,
    ),
    # Not chained: bundle's settings hold calibrate_on too, which keeps the hashes of runs
    # recorded before calibration was a stage of its own.
    Stage(
        "calibrate",
        _calibration,
        (artifacts.CALIBRATION_REPORT, artifacts.CALIBRATED_DIR),
        _calibrate,
        chained=False,
        optional_outputs=True,
    ),
    Stage(
        "bundle",
        lambda c: {"targets": list(c.targets), **_calibration(c)},
        (artifacts.SELECTED, artifacts.BUNDLES_DIR),
        _bundle,
        optional_outputs=True,
    ),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
_STAGE = {stage.name: stage for stage in STAGES}


def stage_hashes(config: RunConfig) -> dict[str, str]:
    """Each stage's hash covers its own settings and every earlier chained stage's."""
    hashes, chain = {}, __version__
    for stage, settings in config.stage_settings().items():
        text = chain + stage + json.dumps(settings, sort_keys=True, default=list)
        hashes[stage] = hashlib.sha256(text.encode()).hexdigest()[:16]
        if _STAGE[stage].chained:
            chain = hashes[stage]
    return hashes


def output_hashes(stage: Stage, run_dir: Path, config: RunConfig) -> dict[str, str]:
    """sha256 of every file a stage wrote, by path relative to the run directory."""
    files = []
    for path in stage.output_paths(run_dir, config):
        if path.is_dir():
            files += artifacts.written_files(path)  # a bundle's own files, not the user's
        elif path.is_file():
            files.append(path)
    return {str(p.relative_to(run_dir)): artifacts.sha256(p) for p in files}


def outputs_intact(stage: Stage, run_dir: Path, recorded: dict | None) -> bool:
    """True when every file the stage recorded is there with the same content (files a
    user added later to a folder do not count)."""
    if not isinstance(recorded, dict) or (not recorded and not stage.optional_outputs):
        return False  # an older record that did not hash its outputs proves nothing
    for relative, digest in recorded.items():
        path = run_dir / relative
        if not path.is_file() or artifacts.sha256(path) != digest:
            log.warning("%s: %s is missing or changed since it was written", stage.name, relative)
            return False
    return True


def is_done(stage: Stage, entry: dict, stage_hash: str, run_dir: Path) -> bool:
    """The stage ran with these settings and its outputs are still as it left them."""
    return (
        entry.get("hash") == stage_hash
        and outputs_intact(stage, run_dir, entry.get("outputs"))
        and stage.still_done(run_dir)
    )


def read_record(run_dir: Path, hashes: dict[str, str]) -> dict:
    """stages.json, in today's layout.

    Before calibration was a stage of its own, bundle's record held the calibration files
    too. They become calibrate's, with its hash when bundle's still matches: bundle's
    settings hold calibrate_on, so the same bundle hash means the same calibration.
    """
    path = run_dir / artifacts.STAGE_RECORD
    record = artifacts.read_json(path) if path.is_file() else {}
    bundle = record.get("bundle")
    if (
        "calibrate" in record
        or not isinstance(bundle, dict)
        or bundle.get("hash") != hashes["bundle"]
        or not isinstance(bundle.get("outputs"), dict)
    ):
        return record
    names = _STAGE["calibrate"].outputs
    outputs = bundle["outputs"]
    moved = {path: digest for path, digest in outputs.items() if path.split("/")[0] in names}
    bundle["outputs"] = {path: digest for path, digest in outputs.items() if path not in moved}
    record["calibrate"] = {"hash": hashes["calibrate"], "seconds": None, "outputs": moved}
    return record


def calibrate_selected(run_dir: Path, selected: dict, config: RunConfig) -> Path:
    """The model to bundle: the selected one, calibrated on config.calibrate_on if given.

    Without calibrate_on, an earlier run's calibration is removed, so nothing stale ships
    or reaches the report.
    """
    from edgexray.pipeline.calibrate import CalibrateConfig, calibrate_run_model

    model = run_dir / selected["model"]
    if not config.calibrate_on:
        artifacts.remove_outputs(
            run_dir, names=(artifacts.CALIBRATED_DIR, artifacts.CALIBRATION_REPORT)
        )
        return model
    settings = CalibrateConfig(target_recall=config.train.target_recall)
    report = calibrate_run_model(run_dir, model, Path(config.calibrate_on), settings)
    return Path(report["calibrated_model"])


def select_device_model(run_dir: Path, verify_report: VerifyReport) -> dict:
    """The full-int8 variant to deploy: passing the gate, best val specificity, then smallest.

    Choosing on val, not test, keeps the test split an honest estimate.
    """
    quantized = read_report(run_dir)["variants"]
    passed = {Path(c["model"]).stem for c in verify_report["candidates"] if c["passed"]}
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


def device_model(run_dir: Path) -> dict | None:
    """select_device_model on the run's verify.json; None when the gate failed and no
    full-int8 variant passed it (nothing ships then).

    Raises:
        EdgexrayError: the gate passed, but no full-int8 variant was among the candidates.
    """
    verify_report: VerifyReport = artifacts.read_json(run_dir / artifacts.VERIFY_REPORT)
    try:
        return select_device_model(run_dir, verify_report)
    except EdgexrayError:
        if verify_report["passed"]:
            raise
        return None


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
        A summary: per-stage status and seconds, the gate result, the selected model and
        the variants excluded because they failed the gate (with their reasons).

    Raises:
        NothingToDeploy: no full-int8 variant passed the gate (a RecallRegressionError).
        RecallRegressionError: with config.strict, some variant failed the gate.
        Both are raised after every stage has run, so the report shows what happened.
    """
    name = config.train.distribute
    run_dir = distribute.output_dir(run_dir, name)  # a worker's is private
    if name == "multiworker":
        # Every process must run the same distributed stages in step, and a worker keeps
        # nothing between jobs, so a multiworker job redoes everything from training.
        force = STAGE_NAMES
    unknown = set(force) - set(STAGE_NAMES)
    if unknown:
        raise EdgexrayError(f"unknown stage {sorted(unknown)[0]!r}: choose from {STAGE_NAMES}")
    if not Path(config.train.data).is_dir():
        # Before anything is written: a bad --data must not leave a run directory behind.
        raise EdgexrayError(f"data folder not found: {config.train.data}")
    if config.calibrate_on:  # a bad site folder fails now, not after training
        from edgexray.pipeline.calibrate import CalibrateConfig, check_site

        check_site(Path(config.calibrate_on), CalibrateConfig(config.train.target_recall))
    artifacts.require_run_folder(run_dir)  # never run into (and clean) someone's folder
    # Without the train extra, say so now: the lock below would create the run folder.
    import edgexray.compat  # noqa: F401  (raises TrainingExtraMissing with the pip line)

    with artifacts.locked(run_dir):  # a second run into the same folder is refused
        return _run_stages(config, run_dir, force, verbose, on_stage)


def _run_stages(config: RunConfig, run_dir: Path, force, verbose: int, on_stage) -> dict:
    """run()'s stages in order, with the run folder locked."""
    name = config.train.distribute
    hashes = stage_hashes(config)
    record_path = run_dir / artifacts.STAGE_RECORD
    record = read_record(run_dir, hashes)
    notify = on_stage or (lambda index, stage, event: None)
    gate_error, redo, statuses = None, False, {}
    for index, stage in enumerate(STAGES, 1):
        if not distribute.is_chief(name) and not stage.distributed:
            return {"run_dir": str(run_dir), "stages": statuses, "worker": True}
        key = stage.name
        entry = record.get(key) if isinstance(record.get(key), dict) else {}
        if not redo and key not in force and is_done(stage, entry, hashes[key], run_dir):
            statuses[key] = {"status": "skipped (unchanged)", "seconds": entry.get("seconds")}
            notify(index, key, "skip")
            continue
        redo = True  # its outputs change, so every later stage runs too
        notify(index, key, "start")
        if record.pop(key, None) is not None:
            artifacts.write_json(record_path, record)
        started = time.monotonic()
        gate_error = stage.runner(config, run_dir, verbose) or gate_error
        seconds = round(time.monotonic() - started, 1)
        outputs = output_hashes(stage, run_dir, config)
        record[key] = {"hash": hashes[key], "seconds": seconds, "outputs": outputs}
        artifacts.write_json(record_path, record)
        statuses[key] = {"status": "ran", "seconds": seconds}
        notify(index, key, "done")

    selected_path = run_dir / artifacts.SELECTED
    selected = artifacts.read_json(selected_path) if selected_path.is_file() else None
    summary = {
        "run_dir": str(run_dir),
        "stages": statuses,
        "gate_passed": gate_error is None,
        "selected": selected,
        "excluded": excluded_variants(run_dir),
    }
    from edgexray.report import write_report

    write_report(run_dir, config, summary)
    if gate_error is not None and selected is None:
        raise NothingToDeploy(gate_error.report)
    if gate_error is not None and config.strict:
        raise gate_error
    return summary


def copy_reference_model(run_dir: Path, destination: Path) -> Path:
    """Copy the run's selected device model to destination/edgexray-int8.tflite, its
    sidecar inside naming the new file, and the readable copy beside it."""
    from edgexray.edge_runtime.sidecar import load_sidecar

    selected = artifacts.read_json(Path(run_dir) / artifacts.SELECTED)
    source = Path(run_dir) / selected["model"]
    target = Path(destination) / "edgexray-int8.tflite"
    sidecar = {**load_sidecar(source), "model_file": target.name}
    artifacts.write_model(target, source.read_bytes(), sidecar)
    return target


def summary_lines(summary: dict) -> list[str]:
    """A readable table of a run() summary: each stage's status and seconds, what to
    deploy, and last every variant that failed the gate, with why."""
    lines = [f"{'stage':<10} {'status':<20} {'seconds':>8}"]
    for stage, status in summary["stages"].items():
        seconds = "" if status["seconds"] is None else status["seconds"]  # not recorded
        lines.append(f"{stage:<10} {status['status']:<20} {seconds:>8}")
    selected = summary["selected"]
    calibrated = (
        f" calibrated as {selected['calibrated_model']}" if "calibrated_model" in selected else ""
    )
    excluded = summary.get("excluded") or []
    passed = "passed by every variant" if not excluded else "passed by the deployed model"
    lines.append(f"recall gate: {passed}; deploy {selected['model']}{calibrated}")
    return lines + excluded_lines(excluded)
