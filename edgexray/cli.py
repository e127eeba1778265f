"""The `edgexray` command: thin Typer functions over the library.

Each command builds a config, calls one library function and prints a summary. Library
errors (EdgexrayError) become one line on stderr and exit code 2; nothing here imports
TensorFlow at module level, so `edgexray --help` stays fast.

Every option that sets a config field takes its default from that config dataclass
(`default`), so `--help` shows what the library would use. Every command function is named
NAME_command. It is longer than edgexray's other modules because it holds ten commands'
options and help texts, which is what a reader of one command looks for in one place; no
command holds logic of its own: tables and summaries come from the library (`*_lines`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from edgexray import __version__
from edgexray.benchmarks.harness import BenchmarkConfig
from edgexray.errors import EdgexrayError
from edgexray.export.bundle import BundleConfig
from edgexray.export.quantize import QuantizeConfig
from edgexray.pipeline.calibrate import CalibrateConfig
from edgexray.pipeline.prune import PruneConfig
from edgexray.pipeline.train import TrainConfig
from edgexray.pipeline.verify import GateLimits


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


def default(config_class, name: str):
    """A config dataclass's default for one field: the one source of an option's default."""
    field = {f.name: f for f in dataclasses.fields(config_class)}[name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def given(ctx: typer.Context, **values) -> dict:
    """The values among `values` (named as their options) given on the command line."""
    # By the source's name: typer bundles its own copy of click in newer versions.
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k).name != "DEFAULT"}


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
            level=logging.WARNING,
            format="%(levelname)s: %(message)s",
            stream=sys.stderr,
            force=True,
        )
        logging.getLogger("edgexray").setLevel(logging.INFO)
        previous = _on_sigterm(_terminate)
        try:
            return command(*args, **kwargs)
        except EdgexrayError as err:
            raise fail(str(err), err.exit_code) from None
        except Terminated:
            raise fail("terminated", 143) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except OSError as err:  # a read-only or full disk, a vanished file
            raise fail(f"{err.strerror or err}: {err.filename or ''}".rstrip(": ")) from None
        finally:
            _on_sigterm(previous)

    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: what runs stops cleanly (training keeps its best
    checkpoint, temporary folders such as the converter's SavedModel are removed)."""


def _terminate(signum, frame):
    raise Terminated


def _on_sigterm(handler):
    """Install handler for SIGTERM (main thread only); return the previous one."""
    import signal
    import threading

    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


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


# The gate's limits, shared by verify and run (why these defaults: pipeline/verify.py).
GATE = GateLimits()
MaxRecallDrop = Annotated[
    float, typer.Option(help="Pneumonia recall a candidate may lose against the float model.")
]
MaxSpecificityDrop = Annotated[
    float,
    typer.Option(help="Specificity a candidate may lose (0.10 is 12 of 117 normal test films)."),
]
MaxAucDrop = Annotated[
    float, typer.Option(help="AUC a candidate may lose against the float model.")
]
MaxOutOfScope = Annotated[
    float,
    typer.Option(
        help="Share of the films a candidate's scope guard may refuse (all are in scope)."
    ),
]


def _verbosity() -> int:
    """Keras progress bars on a terminal, one line per epoch in logs and CI."""
    return 1 if sys.stderr.isatty() else 2


@app.command("train")
@user_errors
def train_command(
    ctx: typer.Context,
    data: Annotated[
        Path | None, typer.Option(help="Data folder (NORMAL/ PNEUMONIA/ or Kaggle root).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/default"),
    config: Annotated[
        Path | None,
        typer.Option(help="JSON file with TrainConfig fields; the options given here win."),
    ] = None,
    image_size: Annotated[int, typer.Option(help="Input height and width.")] = default(
        TrainConfig, "image_size"
    ),
    width: Annotated[int, typer.Option(help="Filters of the first stage.")] = default(
        TrainConfig, "width"
    ),
    epochs: Annotated[int, typer.Option(help="Maximum epochs.")] = default(TrainConfig, "epochs"),
    target_recall: Annotated[
        float, typer.Option(help="Pneumonia recall the val threshold must reach.")
    ] = default(TrainConfig, "target_recall"),
    seed: Annotated[int, typer.Option(help="Seed for split, init and augmentation.")] = default(
        TrainConfig, "seed"
    ),
    max_train_images: Annotated[
        int, typer.Option(help="Use at most this many training images (0 = all).")
    ] = default(TrainConfig, "max_train_images"),
    distribute: Annotated[str, typer.Option(help=DISTRIBUTE_HELP)] = default(
        TrainConfig, "distribute"
    ),
):
    """Train the float model: patient-grouped split, early stopping, val-chosen threshold."""
    from edgexray.pipeline.train import summary_lines, train

    values = given(
        ctx,
        data=str(data.resolve()) if data else None,
        image_size=image_size,
        width=width,
        epochs=epochs,
        target_recall=target_recall,
        seed=seed,
        max_train_images=max_train_images,
        distribute=distribute,
    )
    if config:
        train_config = TrainConfig.from_json(config, **values)
    elif data is None:
        raise fail("give --data DIR (a folder with NORMAL/ and PNEUMONIA/) or --config FILE")
    else:
        train_config = TrainConfig(**values)
    summary = train(train_config, out, verbose=_verbosity())
    if not _writes_artifacts(train_config.distribute):
        return
    for line in summary_lines(summary):
        typer.echo(line)
    typer.echo(f"run directory: {out}")
    if summary["interrupted"]:
        raise typer.Exit(130)


@app.command("evaluate")
@user_errors
def evaluate_command(
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
    from edgexray.pipeline.evaluate import evaluate, report_lines

    report = evaluate(model, data, split, threshold, predictions)
    if json_output:
        typer.echo(json.dumps(json_safe(report), indent=2, allow_nan=False))
        return
    for line in report_lines(report):
        typer.echo(line)


@app.command("verify")
@user_errors
def verify_command(
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
    max_recall_drop: MaxRecallDrop = GATE.max_recall_drop,
    max_specificity_drop: MaxSpecificityDrop = GATE.max_specificity_drop,
    max_auc_drop: MaxAucDrop = GATE.max_auc_drop,
    max_out_of_scope: MaxOutOfScope = GATE.max_out_of_scope,
):
    """Fail (exit 1) when a candidate misses more pneumonia than the float baseline, or
    loses too much specificity or AUC (a model calling every film pneumonia must not pass)."""
    from edgexray.pipeline.verify import (
        REPORT,
        RecallRegressionError,
        table_lines,
        verify,
        verify_run,
    )

    if run_dir is not None and (baseline or candidate or data):
        raise fail("give either RUN_DIR or --baseline/--candidate/--data, not both")
    if run_dir is None and not (baseline and candidate and data):
        raise fail("give RUN_DIR, or --baseline M --candidate M [--candidate M ...] --data DIR")
    limits = GateLimits(max_recall_drop, max_specificity_drop, max_auc_drop, max_out_of_scope)
    try:
        if run_dir is not None:
            report = verify_run(run_dir, limits)
        else:
            report = verify(baseline, candidate, data, split, limits)
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
        float, typer.Option(help="Share of Conv2D/Dense kernel weights set to zero.")
    ] = default(PruneConfig, "sparsity"),
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs while pruning.")] = default(
        PruneConfig, "epochs"
    ),
    learning_rate: Annotated[float, typer.Option(help="Fine-tuning learning rate.")] = default(
        PruneConfig, "learning_rate"
    ),
    distribute: Annotated[str, typer.Option(help=DISTRIBUTE_HELP)] = default(
        PruneConfig, "distribute"
    ),
):
    """Prune the trained model, fine-tune it and save pruned.keras (model.keras is untouched)."""
    from edgexray import artifacts
    from edgexray.pipeline.prune import prune, summary_lines

    config = PruneConfig(
        sparsity=sparsity, epochs=epochs, learning_rate=learning_rate, distribute=distribute
    )
    report = prune(run_dir, config, verbose=_verbosity())
    if not _writes_artifacts(distribute):
        return
    for line in summary_lines(report):
        typer.echo(line)
    typer.echo(f"pruned model: {Path(run_dir) / artifacts.PRUNED}")


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
        int, typer.Option(help="Train images calibrating int8 ranges.")
    ] = default(QuantizeConfig, "representative_size"),
    qat_epochs: Annotated[int, typer.Option(help="Fine-tuning epochs of qat and pqat.")] = default(
        QuantizeConfig, "qat_epochs"
    ),
    distribute: Annotated[str, typer.Option(help=DISTRIBUTE_HELP)] = default(
        QuantizeConfig, "distribute"
    ),
):
    """Export TFLite variants, each with a sidecar and its own val-chosen threshold."""
    from edgexray import artifacts
    from edgexray.export.quantize import parse_methods, quantize, table_lines

    methods = parse_methods(method or ["all"])
    config = QuantizeConfig(
        representative_size=representative_size, qat_epochs=qat_epochs, distribute=distribute
    )
    results = quantize(run_dir, methods, config, verbose=_verbosity())
    if not _writes_artifacts(distribute):
        return
    for line in table_lines(results):
        typer.echo(line)
    typer.echo(f"models and sidecars: {Path(run_dir) / artifacts.TFLITE_DIR}")


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
    threads: Annotated[str, typer.Option(help="Interpreter thread counts to time.")] = ",".join(
        map(str, default(BenchmarkConfig, "threads"))
    ),
    warmup: Annotated[int, typer.Option(help="Untimed runs before timing.")] = default(
        BenchmarkConfig, "warmup"
    ),
    runs: Annotated[int, typer.Option(help="Timed runs per thread count.")] = default(
        BenchmarkConfig, "runs"
    ),
    out: Annotated[Path | None, typer.Option(help="Output folder [RUN_DIR/benchmark].")] = None,
):
    """Size, latency, memory and clinical metrics of every variant, side by side, with plots."""
    from edgexray.benchmarks.harness import benchmark
    from edgexray.benchmarks.tables import table
    from edgexray.formatting import format_table, target_state

    config = BenchmarkConfig(
        threads=BenchmarkConfig.parse_threads(threads),
        warmup=warmup,
        runs=runs,
        out=str(out) if out else None,
        data=str(data) if data else None,
    )
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
        model,
        images,
        record_format,
        threads,
        report_path=report,
        check_scope=not no_scope_check,
    )
    raise typer.Exit(code)


def _run_edge(model: Path | None, images, record_format: str, threads, **options) -> int:
    """batch.run with the CLI's error handling: one line on stderr, never a traceback."""
    from edgexray.edge_runtime import batch
    from edgexray.edge_runtime.cli import silence_stdout
    from edgexray.edge_runtime.errors import InferenceError, OutputError
    from edgexray.edge_runtime.interpreter import check_threads

    try:
        check_threads(threads)
        return batch.run(
            _model_or_reference(model), images, record_format, threads, sys.stdout, **options
        )
    except OutputError as err:  # a full disk: the records were not all written
        silence_stdout()
        raise EdgexrayError(str(err)) from None
    except InferenceError as err:
        raise EdgexrayError(str(err)) from None
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        silence_stdout()
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
    grid: Annotated[
        str | None,
        typer.Option(
            metavar="PATCH/STRIDE",
            help="Occlusion grid in pixels of the model input (default 32/24, 26 model runs "
            "a film; 20/10 is finer and takes 145).",
        ),
    ] = None,
):
    """Where the deployed model looked: an occlusion heatmap per film, from the .tflite itself.

    Prints each film's record (as `predict`) with the paths of its overlay and map.
    """
    model = films[0] if films[0].suffix.lower() == ".tflite" else None
    films = films[1:] if model is not None else films
    if not films:
        raise fail("give image files or folders after the model")
    raise typer.Exit(
        _run_edge(model, films, "jsonl", threads, explain_dir=out, report_path=report, grid=grid)
    )


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
    ] = default(BundleConfig, "zip"),
):
    """Write a folder (and zip) to copy to a Raspberry Pi or into an Android app."""
    from edgexray.export.bundle import make_bundle

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
    ] = default(CalibrateConfig, "target_recall"),
    confidence: Annotated[
        float, typer.Option(help="Confidence of that guarantee, over the draw of the sample.")
    ] = default(CalibrateConfig, "confidence"),
    prevalence: Annotated[
        float | None, typer.Option(help="Pneumonia prevalence at the site, for PPV and NPV.")
    ] = default(CalibrateConfig, "prevalence"),
    folds: Annotated[int, typer.Option(help="Patient-grouped cross-validation folds.")] = default(
        CalibrateConfig, "folds"
    ),
    allow_point_estimate: Annotated[
        bool,
        typer.Option(
            help="With too few pneumonia films, use the plain empirical threshold (labelled a "
            "point estimate, no guarantee) instead of failing."
        ),
    ] = default(CalibrateConfig, "allow_point_estimate"),
    patients: Annotated[
        Path | None,
        typer.Option(
            help="CSV file,patient naming each film's patient, for the patient-grouped "
            "cross-validation; default: DICOM PatientID, else Kaggle-style file names."
        ),
    ] = None,
):
    """Re-choose the threshold on a new site's films so recall holds with stated confidence."""
    from edgexray.pipeline.calibrate import calibrate, summary_lines

    config = CalibrateConfig(
        target_recall=target_recall,
        confidence=confidence,
        prevalence=prevalence,
        folds=folds,
        allow_point_estimate=allow_point_estimate,
    )
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
    epochs: Annotated[int, typer.Option(help="Maximum training epochs.")] = default(
        TrainConfig, "epochs"
    ),
    sparsity: Annotated[float, typer.Option(help="Pruning sparsity.")] = default(
        PruneConfig, "sparsity"
    ),
    target_recall: Annotated[
        float, typer.Option(help="Pneumonia recall the thresholds must reach on val.")
    ] = default(TrainConfig, "target_recall"),
    max_recall_drop: MaxRecallDrop = GATE.max_recall_drop,
    max_specificity_drop: MaxSpecificityDrop = GATE.max_specificity_drop,
    max_auc_drop: MaxAucDrop = GATE.max_auc_drop,
    max_out_of_scope: MaxOutOfScope = GATE.max_out_of_scope,
    seed: Annotated[int, typer.Option(help="Seed for split, init and augmentation.")] = default(
        TrainConfig, "seed"
    ),
    calibrate_on: Annotated[
        Path | None,
        typer.Option(
            help="A site's labelled NORMAL/ PNEUMONIA/ sample: calibrate the device model on it "
            "(recall >= the target at 95% confidence) and bundle the calibrated copy."
        ),
    ] = None,
    distribute: Annotated[str, typer.Option(help=DISTRIBUTE_HELP)] = default(
        TrainConfig, "distribute"
    ),
    download: Annotated[
        bool, typer.Option(help="No data found: download the public set first (data download).")
    ] = False,
):
    """The whole job: train, prune, quantize, verify, benchmark and bundle; resumable."""
    import time

    from edgexray import artifacts
    from edgexray.pipeline import train
    from edgexray.pipeline.verify import RecallRegressionError
    from edgexray.run import STAGES, RunConfig, find_data, run, summary_lines

    train_config = TrainConfig(
        data=str(find_data(data, download).resolve()),
        epochs=epochs,
        target_recall=target_recall,
        seed=seed,
        distribute=distribute,
    )
    config = RunConfig(
        train=train_config,
        prune=PruneConfig(sparsity=sparsity, distribute=distribute),
        quantize=QuantizeConfig(distribute=distribute),
        gate=GateLimits(max_recall_drop, max_specificity_drop, max_auc_drop, max_out_of_scope),
        calibrate_on=str(calibrate_on.resolve()) if calibrate_on else None,
    )
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
    for line in train.summary_lines(train.read_metrics(out)):
        typer.echo(line)
    for line in summary_lines(summary):
        typer.echo(line)
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
    from edgexray.edge_runtime import REFERENCE_MODEL
    from edgexray.edge_runtime.cli import serve_main

    raise typer.Exit(serve_main(list(ctx.args), "edgexray serve", REFERENCE_MODEL))


# --- edgexray data ... (issue 20): getting the public data set ------------------------

data_app = typer.Typer(
    help="Get the public chest X-ray data set.", no_args_is_help=True, add_completion=False
)
app.add_typer(data_app, name="data")


@data_app.command("download")
@user_errors
def data_download_command(
    out: Annotated[
        Path, typer.Option(help="Folder to put chest_xray/ in (./data is where run looks).")
    ] = Path("data"),
    source: Annotated[
        str, typer.Option(help="mendeley (no account) or kaggle (kagglehub, a Kaggle token).")
    ] = "mendeley",
    url: Annotated[str | None, typer.Option(help="A mirror of the source's archive.")] = None,
    sha256: Annotated[
        str | None, typer.Option(help="The archive's expected sha256 (64 hex digits).")
    ] = None,
    archive: Annotated[
        Path | None,
        typer.Option(help="Extract this archive, already downloaded by hand; no network."),
    ] = None,
    keep_archive: Annotated[
        bool, typer.Option(help="Keep the downloaded archive in OUT/.download.")
    ] = False,
):
    """Download, verify and extract the data into OUT/chest_xray/{train,test}/{NORMAL,PNEUMONIA}.

    A cut download resumes when the same command runs again.
    """
    from edgexray.pipeline import download

    label = Path(download.SOURCES[source].filename).name if source in download.SOURCES else ""
    result = download.download(
        out,
        source,
        url=url,
        sha256=sha256,
        archive=archive,
        keep_archive=keep_archive,
        on_progress=download.progress_printer(f"downloading {label or source}"),
    )
    if not result.downloaded:
        typer.echo(f"already there: {result.folder} (remove it to download again)")
        return
    for split, labels in result.counts.items():
        typer.echo(f"{split}: " + ", ".join(f"{n} {label}" for label, n in labels.items()))
    if result.sha256:
        typer.echo(f"archive sha256: {result.sha256}")
    typer.echo(f"data: {result.folder}")
