"""The `edgexray` command: thin Typer functions over the library.

Each command builds a config, calls one library function and prints a summary. Library
errors (EdgexrayError) become one line on stderr and exit code 2; nothing here imports
TensorFlow at module level, so `edgexray --help` stays fast.

It is longer than edgexray's other modules (about 600 lines) because it holds ten
commands' options and help texts, which is what a reader of one command looks for in one
place; no command holds logic of its own.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from edgexray import __version__
from edgexray.errors import EdgexrayError


class OneLineUsageErrors(TyperGroup):
    """The command group: a usage error (unknown option, bad value) is one `error:` line
    and exit 2, like every other error, instead of a boxed usage message."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        except Exception as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # no command: the help is the answer
                err.show()
                sys.exit(err.exit_code)
            if not hasattr(err, "format_message") or not isinstance(
                getattr(err, "exit_code", None), int
            ):
                raise
            message = " ".join(err.format_message().split())
            typer.echo(f"error: {message} (see --help)", err=True)
            sys.exit(err.exit_code)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineUsageErrors,
    help="Train, prune, quantize, verify, benchmark and ship a chest X-ray pneumonia "
    "classifier for cheap devices.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


DISTRIBUTE_HELP = (
    "Train with tf.distribute: none, mirrored (local GPUs, else CPUs) or multiworker "
    "(TF_CONFIG; only the chief writes). See README 'Training on a cluster'."
)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def user_errors(command):
    """Turn library errors into one line and their exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        # Our progress at INFO; other libraries (TensorFlow's "Assets written to ...")
        # only from WARNING up.
        logging.basicConfig(
            level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr,
            force=True,
        )  # fmt: skip
        logging.getLogger("edgexray").setLevel(logging.INFO)
        try:
            return command(*args, **kwargs)
        except EdgexrayError as err:
            raise fail(str(err), err.exit_code) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except OSError as err:  # a read-only or full disk, a vanished file
            raise fail(f"{err.strerror or err}: {err.filename or ''}".rstrip(": ")) from None

    return wrapper


def _version(value: bool):
    if value:
        typer.echo(f"edgexray {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
):
    """edgexray command line."""


def _writes_artifacts(distribute: str | None) -> bool:
    """False for a multiworker worker, which says so instead of printing a summary."""
    from edgexray.pipeline import distribute as distribution

    if distribution.is_chief(distribute or "none"):
        return True
    typer.echo("worker finished: the chief wrote the artifacts")
    return False


# The gate's limits, shared by verify and run; defaults are verify.GateLimits' (justified
# in edgexray/pipeline/verify.py), written out so --help works without importing it.
MaxRecallDrop = Annotated[
    float, typer.Option(help="Pneumonia recall a candidate may lose against the float model.")
]
MaxSpecificityDrop = Annotated[
    float,
    typer.Option(help="Specificity a candidate may lose (0.10 = 12 of 117 normal test films)."),
]
MaxAucDrop = Annotated[
    float, typer.Option(help="AUC a candidate may lose against the float model.")
]


def _verbosity() -> int:
    """Keras progress bars on a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stderr.isatty() else 2


@app.command()
@user_errors
def train(
    data: Annotated[
        Path | None, typer.Option(help="Data folder (NORMAL/ PNEUMONIA/ or Kaggle root).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/default"),
    config: Annotated[Path | None, typer.Option(help="JSON file with TrainConfig fields.")] = None,
    image_size: Annotated[int | None, typer.Option(help="Input height and width [128].")] = None,
    width: Annotated[int | None, typer.Option(help="Filters of the first stage [12].")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs [20].")] = None,
    target_recall: Annotated[
        float | None, typer.Option(help="Pneumonia recall the val threshold must reach [0.97].")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for split, init and augmentation [42].")
    ] = None,
    max_train_images: Annotated[
        int | None, typer.Option(help="Use at most this many training images (0 = all).")
    ] = None,
    distribute: Annotated[str | None, typer.Option(help=DISTRIBUTE_HELP + " [none]")] = None,
):
    """Train the float model: patient-grouped split, early stopping, val-chosen threshold."""
    from edgexray.pipeline.train import TrainConfig, summary_lines
    from edgexray.pipeline.train import train as run_training

    overrides = dict(
        data=str(data.resolve()) if data else None, image_size=image_size, width=width,
        epochs=epochs, target_recall=target_recall, seed=seed, max_train_images=max_train_images,
        distribute=distribute,
    )  # fmt: skip
    if config:
        train_config = TrainConfig.from_json(config, **overrides)
    elif data is None:
        raise fail("give --data DIR (a folder with NORMAL/ and PNEUMONIA/) or --config FILE")
    else:
        train_config = TrainConfig(**{k: v for k, v in overrides.items() if v is not None})
    summary = run_training(train_config, out, verbose=_verbosity())
    if not _writes_artifacts(train_config.distribute):
        return
    for line in summary_lines(summary):
        typer.echo(line)
    typer.echo(f"run directory: {out}")
    if summary["interrupted"]:
        raise typer.Exit(130)


@app.command()
@user_errors
def evaluate(
    model: Annotated[
        Path, typer.Argument(help="A .tflite (with its .json sidecar) or a run's .keras model.")
    ],
    data: Annotated[
        Path,
        typer.Option(
            help="NORMAL/ PNEUMONIA/ folder, Kaggle root, or run directory (its manifest)."
        ),
    ],
    split: Annotated[str, typer.Option(help="Split of a Kaggle root or run directory.")] = "test",
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Decision threshold; default: the sidecar's, or the run's val-chosen one."
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object on stdout (logs stay on stderr).")
    ] = False,
    predictions: Annotated[
        Path | None,
        typer.Option(
            help="Write per-image predictions (path,label,probability,predicted) to this CSV."
        ),
    ] = None,
):
    """Clinical metrics of a model: recall and specificity with 95% CIs, AUC, calibration."""
    import json

    from edgexray.formatting import json_safe
    from edgexray.pipeline.evaluate import evaluate as run_evaluation
    from edgexray.pipeline.evaluate import report_lines

    report = run_evaluation(model, data, split, threshold, predictions)
    if json_output:
        typer.echo(json.dumps(json_safe(report), indent=2, allow_nan=False))
        return
    for line in report_lines(report):
        typer.echo(line)


@app.command()
@user_errors
def verify(
    run_dir: Annotated[
        Path | None,
        typer.Argument(
            help="Run directory: model.keras vs every tflite/*.tflite on its test split."
        ),
    ] = None,
    baseline: Annotated[
        Path | None, typer.Option(help="Float model (.keras in its run directory, or .tflite).")
    ] = None,
    candidate: Annotated[
        list[Path] | None, typer.Option(help="Compressed model to check (repeat for several).")
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Images for --baseline/--candidate: NORMAL/ PNEUMONIA/ folder, Kaggle root "
            "or run directory."
        ),
    ] = None,
    split: Annotated[
        str, typer.Option(help="Split of a Kaggle root or run directory given as --data.")
    ] = "test",
    max_recall_drop: MaxRecallDrop = 0.0,
    max_specificity_drop: MaxSpecificityDrop = 0.10,
    max_auc_drop: MaxAucDrop = 0.01,
):
    """Fail (exit 1) when a candidate misses more pneumonia than the float baseline, or
    loses too much specificity or AUC (a model calling every film pneumonia must not pass)."""
    from edgexray.pipeline.verify import (
        REPORT,
        GateLimits,
        RecallRegressionError,
        table_lines,
        verify_run,
    )
    from edgexray.pipeline.verify import verify as run_verify

    if run_dir is not None and (baseline or candidate or data):
        raise fail("give either RUN_DIR or --baseline/--candidate/--data, not both")
    if run_dir is None and not (baseline and candidate and data):
        raise fail("give RUN_DIR, or --baseline M --candidate M [--candidate M ...] --data DIR")
    limits = GateLimits(max_recall_drop, max_specificity_drop, max_auc_drop)
    try:
        if run_dir is not None:
            report = verify_run(run_dir, limits)
        else:
            report = run_verify(baseline, candidate, data, split, limits)
    except RecallRegressionError as err:
        for line in table_lines(err.report):
            typer.echo(line)
        if run_dir is not None:
            typer.echo(f"report: {run_dir / REPORT}")
        raise
    for line in table_lines(report):
        typer.echo(line)
    if run_dir is not None:
        typer.echo(f"report: {run_dir / REPORT}")
    typer.echo(
        "passed: no candidate lost pneumonia recall, specificity or AUC beyond the allowed drop"
    )


@app.command("prune")
@user_errors
def prune_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `edgexray train`.")],
    sparsity: Annotated[
        float | None, typer.Option(help="Share of Conv2D/Dense kernel weights set to zero [0.8].")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(help="Fine-tuning epochs while pruning [3].")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Fine-tuning learning rate [3e-4].")
    ] = None,
    distribute: Annotated[str, typer.Option(help=DISTRIBUTE_HELP)] = "none",
):
    """Prune the trained model, fine-tune it and save pruned.keras (model.keras is untouched)."""
    from edgexray.pipeline.prune import PruneConfig, prune

    overrides = dict(sparsity=sparsity, epochs=epochs, learning_rate=learning_rate)
    config = PruneConfig(
        distribute=distribute, **{k: v for k, v in overrides.items() if v is not None}
    )
    report = prune(run_dir, config, verbose=_verbosity())
    if not _writes_artifacts(distribute):
        return
    measured, val = report["sparsity"], report["val"]
    typer.echo(
        f"sparsity {measured['overall']:.3f} measured on the stripped kernels "
        f"({measured['zeros']:,} of {measured['weights']:,} weights are zero)"
    )
    for name, value in measured["layers"].items():
        typer.echo(f"  {name:<12} {value:.3f}")
    typer.echo(
        f"val AUC {val['auc']:.4f} (baseline {report['baseline_val_auc']:.4f}); at threshold "
        f"{val['threshold']:.4f}: recall {val['recall']:.4f}, specificity {val['specificity']:.4f}"
    )
    typer.echo(f"pruned model: {Path(run_dir) / 'pruned.keras'}")


@app.command("quantize")
@user_errors
def quantize_command(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `edgexray train`.")],
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            help="all, float32, float16, dynamic, int8, qat, pqat, pruned-int8; repeat or "
            "comma-separate [all]. pqat and pruned-int8 (so also all) need `edgexray prune` first.",
        ),
    ] = None,
    representative_size: Annotated[
        int | None, typer.Option(help="Train images calibrating int8 ranges [256].")
    ] = None,
    qat_epochs: Annotated[
        int | None, typer.Option(help="Fine-tuning epochs of qat and pqat [1].")
    ] = None,
    distribute: Annotated[str, typer.Option(help=DISTRIBUTE_HELP)] = "none",
):
    """Export TFLite variants, each with a sidecar and its own val-chosen threshold."""
    from edgexray.export.quantize import QuantizeConfig, parse_methods, quantize

    methods = parse_methods(method or ["all"])
    overrides = dict(representative_size=representative_size, qat_epochs=qat_epochs)
    config = QuantizeConfig(
        distribute=distribute, **{k: v for k, v in overrides.items() if v is not None}
    )
    results = quantize(run_dir, methods, config, verbose=_verbosity())
    if not _writes_artifacts(distribute):
        return
    typer.echo(
        f"{'method':<12} {'size KB':>8} {'gzip KB':>8} {'sparsity':>8} {'threshold':>9} "
        f"{'val recall':>10} {'val spec':>8}"
    )
    for r in results:
        typer.echo(
            f"{r['method']:<12} {r['size_bytes'] / 1024:>8.1f} {r['gzip_bytes'] / 1024:>8.1f} "
            f"{r['sparsity']:>8.3f} {r['threshold']:>9.4f} {r['val']['recall']:>10.4f} "
            f"{r['val']['specificity']:>8.4f}"
        )
    typer.echo(f"models and sidecars: {Path(run_dir) / 'tflite'}")


@app.command("benchmark")
@user_errors
def benchmark_command(
    models: Annotated[
        list[Path], typer.Argument(help="A run directory, or .keras/.tflite models.")
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            help="Test images (test/ or NORMAL/ PNEUMONIA/); default the run's test split."
        ),
    ] = None,
    threads: Annotated[str, typer.Option(help="Interpreter thread counts to time.")] = "1,2",
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = 10,
    runs: Annotated[int, typer.Option(help="Timed runs per thread count.")] = 100,
    out: Annotated[Path | None, typer.Option(help="Output folder [RUN_DIR/benchmark].")] = None,
):
    """Size, latency, memory and clinical metrics of every variant, side by side, with plots."""
    from edgexray.benchmarks.harness import BenchmarkConfig, benchmark
    from edgexray.benchmarks.tables import format_table, table
    from edgexray.formatting import target_state

    config = BenchmarkConfig(
        threads=BenchmarkConfig.parse_threads(threads), warmup=warmup, runs=runs,
        out=str(out) if out else None, data=str(data) if data else None,
    )  # fmt: skip
    result = benchmark(models, config)
    typer.echo(format_table(*table(result)))
    for target in result["targets"]:
        typer.echo(f"target {target_state(target['met'])}: {target['target']}")
    typer.echo(f"benchmark.json, benchmark.md and {len(result['plots'])} plot(s): {result['out']}")


def _model_or_reference(model: Path | None) -> Path:
    """The given model, else the shipped reference model (edgexray/models/)."""
    from edgexray.edge_runtime import REFERENCE_MODEL

    if model is not None:
        return model
    if not REFERENCE_MODEL.is_file():
        raise EdgexrayError(f"reference model not found: {REFERENCE_MODEL}; give a .tflite model")
    return REFERENCE_MODEL


@app.command("predict")
@user_errors
def predict_command(
    images: Annotated[
        list[Path],
        typer.Argument(help="Image files, or folders walked for JPEG, PNG and DICOM films."),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            help="A .tflite with its .json sidecar; default: the shipped reference model."
        ),
    ] = None,
    record_format: Annotated[
        str, typer.Option("--format", help="Records as jsonl or csv.")
    ] = "jsonl",
    threads: Annotated[
        int | None,
        typer.Option(help="Interpreter threads, 1 to 64; default: the runtime's choice."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            help="Also write one self-contained HTML report of the batch to this new file: "
            "heatmaps, most suspicious films first."
        ),
    ] = None,
    no_scope_check: Annotated[
        bool,
        typer.Option(
            "--no-scope-check",
            help="Label every film, even one the out-of-scope guard would refuse "
            "(records then say in_scope null, scope_reason 'not checked').",
        ),
    ] = False,
):
    """Classify images with the standalone edge runtime: one record per image on stdout.

    Exit code 0 when every image was read and in scope, 3 when some could not be read
    (their records say why), else 4 when some were out of scope (label OUT_OF_SCOPE).
    """
    code = _run_edge(
        model, images, record_format, threads, report_path=report,
        check_scope=not no_scope_check,
    )  # fmt: skip
    raise typer.Exit(code)


def _run_edge(model: Path | None, images, record_format: str, threads, **options) -> int:
    """infer.run with the CLI's error handling: one line on stderr, never a traceback."""
    from edgexray.edge_runtime import infer

    try:
        infer.check_threads(threads)
        return infer.run(
            _model_or_reference(model), images, record_format, threads, sys.stdout, **options
        )
    except infer.OutputError as err:  # a full disk: the records were not all written
        infer.silence_stdout()
        raise EdgexrayError(str(err)) from None
    except infer.InferenceError as err:
        raise EdgexrayError(str(err)) from None
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        infer.silence_stdout()
        return 1


@app.command("explain")
@user_errors
def explain_command(
    films: Annotated[
        list[Path],
        typer.Argument(
            metavar="[MODEL.tflite] FILM...",
            help="A .tflite (with its .json sidecar) first, then image files or folders; "
            "without a model first, the shipped reference model.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder for FILM.heatmap.png and FILM.heatmap.npy.")],
    threads: Annotated[
        int | None,
        typer.Option(help="Interpreter threads, 1 to 64; default: the runtime's choice."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Also write the HTML report of the batch to this new file.")
    ] = None,
):
    """Where the deployed model looked: an occlusion heatmap per film, from the .tflite itself.

    Prints each film's record (as `predict`) with the paths of its overlay and map.
    """
    model = films[0] if films[0].suffix.lower() == ".tflite" else None
    films = films[1:] if model is not None else films
    if not films:
        raise fail("give image files or folders after the model")
    raise typer.Exit(_run_edge(model, films, "jsonl", threads, explain_dir=out, report_path=report))


@app.command("bundle")
@user_errors
def bundle_command(
    target: Annotated[str, typer.Option(help="Device: rpi or android.")],
    out: Annotated[
        Path,
        typer.Option(
            help="Bundle folder to write: new, empty, or an earlier bundle, whose own files "
            "(those in its SHA256SUMS) are replaced and yours (results.jsonl, .venv) kept."
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Argument(
            help="A .tflite with its .json sidecar (android: a full-int8 model); "
            "default: the shipped reference model."
        ),
    ] = None,
    zip_bundle: Annotated[
        bool, typer.Option("--zip", help="Also write OUT.zip holding the folder.")
    ] = False,
):
    """Write a folder (and zip) to copy to a Raspberry Pi or into an Android app."""
    from edgexray.export.bundle import BundleConfig, make_bundle

    model = _model_or_reference(model)
    config = BundleConfig(model=str(model), target=target, out=str(out), zip=zip_bundle)
    result = make_bundle(config)
    typer.echo(f"{result['target']} bundle: {result['path']}")
    for name in result["files"]:
        typer.echo(f"  {name}")
    if result["kept"]:
        typer.echo(f"kept your files: {', '.join(result['kept'])}")
    if result["zip"]:
        typer.echo(f"zip: {result['zip']}")
    typer.echo(f"next: follow {Path(result['path']) / 'README.md'}")


@app.command("calibrate")
@user_errors
def calibrate_command(
    model: Annotated[Path, typer.Argument(help="The deployed .tflite (with its .json sidecar).")],
    data: Annotated[
        Path, typer.Option(help="The site's labelled sample: a folder with NORMAL/ and PNEUMONIA/.")
    ],
    out: Annotated[
        Path, typer.Option(help="Folder for the model copy and its calibrated sidecar.")
    ],
    target_recall: Annotated[
        float, typer.Option(help="Pneumonia recall the threshold must guarantee.")
    ] = 0.97,
    confidence: Annotated[
        float, typer.Option(help="Confidence of that guarantee, over the draw of the sample.")
    ] = 0.95,
    prevalence: Annotated[
        float | None, typer.Option(help="Pneumonia prevalence at the site, for PPV and NPV.")
    ] = None,
    folds: Annotated[int, typer.Option(help="Patient-grouped cross-validation folds.")] = 5,
    allow_point_estimate: Annotated[
        bool,
        typer.Option(
            help="With too few pneumonia films, use the plain empirical threshold (labelled a "
            "point estimate, no guarantee) instead of failing."
        ),
    ] = False,
    patients: Annotated[
        Path | None,
        typer.Option(
            help="CSV file,patient naming each film's patient, for the patient-grouped "
            "cross-validation; default: DICOM PatientID, else Kaggle-style file names."
        ),
    ] = None,
):
    """Re-choose the threshold on a new site's films so recall holds with stated confidence."""
    from edgexray.pipeline.calibrate import CalibrateConfig, calibrate, summary_lines

    config = CalibrateConfig(
        target_recall=target_recall, confidence=confidence, prevalence=prevalence, folds=folds,
        allow_point_estimate=allow_point_estimate,
    )  # fmt: skip
    for line in summary_lines(calibrate(model, data, out, config, patients)):
        typer.echo(line)


@app.command("run")
@user_errors
def run_command(
    data: Annotated[
        Path | None,
        typer.Option(
            help="Data folder; default $EDGEXRAY_DATA, ./data/chest_xray, "
            "../shared/data/chest_xray."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory (resumable).")] = Path("runs/default"),
    force: Annotated[
        list[str] | None, typer.Option(help="Redo this stage (and the ones after it); repeatable.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum training epochs.")] = None,
    sparsity: Annotated[float | None, typer.Option(help="Pruning sparsity.")] = None,
    target_recall: Annotated[
        float | None, typer.Option(help="Pneumonia recall the thresholds must reach on val.")
    ] = None,
    max_recall_drop: MaxRecallDrop = 0.0,
    max_specificity_drop: MaxSpecificityDrop = 0.10,
    max_auc_drop: MaxAucDrop = 0.01,
    seed: Annotated[int | None, typer.Option(help="Seed for split, init and augmentation.")] = None,
    calibrate_on: Annotated[
        Path | None,
        typer.Option(
            help="A site's labelled NORMAL/ PNEUMONIA/ sample: calibrate the device model on it "
            "(recall >= the target at 95% confidence) and bundle the calibrated copy."
        ),
    ] = None,
    distribute: Annotated[str, typer.Option(help=DISTRIBUTE_HELP)] = "none",
):
    """The whole job: train, prune, quantize, verify, benchmark and bundle; resumable."""
    import time

    from edgexray import artifacts
    from edgexray.export.quantize import QuantizeConfig
    from edgexray.pipeline.prune import PruneConfig
    from edgexray.pipeline.train import TrainConfig, summary_lines
    from edgexray.pipeline.verify import GateLimits, RecallRegressionError
    from edgexray.run import STAGES, RunConfig, find_data, run

    train_values = dict(epochs=epochs, target_recall=target_recall, seed=seed)
    train_config = TrainConfig(
        data=str(find_data(data).resolve()), distribute=distribute,
        **{k: v for k, v in train_values.items() if v is not None},
    )  # fmt: skip
    prune_values = dict(sparsity=sparsity, distribute=distribute)
    prune_config = PruneConfig(**{k: v for k, v in prune_values.items() if v is not None})
    limits = GateLimits(max_recall_drop, max_specificity_drop, max_auc_drop)
    config = RunConfig(
        train=train_config, prune=prune_config, quantize=QuantizeConfig(distribute=distribute),
        gate=limits, calibrate_on=str(calibrate_on.resolve()) if calibrate_on else None,
    )  # fmt: skip
    started = time.monotonic()

    def on_stage(index, stage, event):
        elapsed = f"{time.monotonic() - started:6.0f} s"
        words = {"start": "running", "skip": "unchanged, skipped", "done": "done"}[event]
        typer.echo(f"[{index}/{len(STAGES)} {elapsed}] {stage}: {words}", err=True)

    try:
        summary = run(config, out, tuple(force or ()), _verbosity(), on_stage)
    except RecallRegressionError as err:
        typer.echo(f"report: {out / artifacts.RUN_REPORT}")
        raise fail(str(err), err.exit_code) from None
    if not _writes_artifacts(distribute):
        return
    for line in summary_lines(artifacts.read_json(out / artifacts.METRICS)):
        typer.echo(line)
    typer.echo(f"{'stage':<10} {'status':<20} {'seconds':>8}")
    for stage, status in summary["stages"].items():
        typer.echo(f"{stage:<10} {status['status']:<20} {status['seconds']:>8}")
    selected = summary["selected"]
    calibrated = (
        f" calibrated as {selected['calibrated_model']}" if "calibrated_model" in selected else ""
    )
    typer.echo(f"recall gate: passed; deploy {selected['model']}{calibrated}")
    typer.echo(f"report: {out / artifacts.RUN_REPORT}")
    typer.echo(f"total: {time.monotonic() - started:.0f} s")


@app.command(
    "serve",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def serve_command(ctx: typer.Context):
    """Run the DICOM node: a Storage SCP that classifies each film it receives.

    The options are those of the device's `infer.py serve` (see `edgexray serve --help`);
    --model defaults to the shipped reference model.
    """
    from edgexray.edge_runtime import REFERENCE_MODEL, node

    raise typer.Exit(node.main(list(ctx.args), "edgexray serve", REFERENCE_MODEL))
