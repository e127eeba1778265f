"""`edgexray train`: a folder of chest X-rays → a validated float Keras model in a run dir."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from edgexray import __version__, artifacts
from edgexray.edge_runtime.options import option
from edgexray.errors import EdgexrayError, check_config, check_threshold
from edgexray.formatting import estimate
from edgexray.pipeline import augment, data, distribute, finetune, metrics, probe, scoring
from edgexray.pipeline.backbones import BACKBONES, COMPACT
from edgexray.pipeline.backbones import NAMES as BACKBONE_NAMES
from edgexray.pipeline.model import STEMS

log = logging.getLogger("edgexray")


def _by_backbone(field: str) -> str:
    """Help text: a recipe field's default for each backbone."""
    return ", ".join(f"{name} {backbone.recipe[field]}" for name, backbone in BACKBONES.items())


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trained model; saved as config.json in the run dir."""

    data: str
    backbone: str = option(
        COMPACT,
        "The network: compact (the small CNN, trained from scratch) or efficientnet-lite0 "
        "(ImageNet weights, fine-tuned; slower, 224 px).",
        choices=BACKBONE_NAMES,
    )
    # None: the backbone's (backbones.BACKBONES' recipe); resolved in __post_init__, so
    # config.json always holds the value used.
    image_size: int | None = option(
        None, f"Input height and width; default by backbone: {_by_backbone('image_size')}."
    )
    # width, stem and dropout: the compact CNN's build; Lite0's is fixed by its weights.
    width: int = option(12, "Filters of the first stage.")
    # "strided": the first convolution steps by 2 instead of a pool after it; val AUC held
    # and a training step costs about a fifth less (benchmarks/README.md, "Speed").
    stem: str = "strided"  # a model.STEMS name: how the first stage halves the resolution
    normalization: str = "equalize"  # or "scale" (plain /255)
    augment: bool = True
    # "site" (what another hospital's export does to a film): the augmentation that held
    # up best at a new site (benchmarks/README.md, "Ablation").
    augmentation: str = "site"  # a policy of augment.AUGMENTATIONS, used when augment
    label_smoothing: float | None = None
    # Both off: neither improved val AUC over the recipe's seed range (benchmarks/README.md,
    # "Ablation"); kept so that comparison can be rerun.
    mixup: float = 0.0  # Beta(mixup, mixup) blend of film pairs while training; 0 = off
    weight_average: float = 0.0  # EMA momentum of the weights while training; 0 = off
    temperature_scaling: bool = True  # fit on val, folded into the last layer
    dropout: float = 0.2
    # The schedule (epochs, batch_size, learning_rate, warmup_epochs) and label_smoothing:
    # None is the backbone's recipe, and why it was chosen is in its row. Longer schedules
    # are a --config file away.
    epochs: int | None = option(
        None, f"Maximum training epochs; default by backbone: {_by_backbone('epochs')}."
    )
    patience: int = 5
    batch_size: int | None = None
    learning_rate: float | None = None
    # Linear rise of the learning rate before the cosine decay; at most epochs - 1, so that
    # `--epochs 1` trains (with no warm-up) instead of refusing a setting the user never made.
    warmup_epochs: int | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    target_recall: float = option(0.97, "Pneumonia recall the val threshold must reach.")
    seed: int = option(42, "Seed for split, init and augmentation.")
    # A smaller number for quick experiments and tests.
    max_train_images: int = option(0, "Use at most this many training images (0 = all).")
    distribute: str = distribute.setting()

    def __post_init__(self):
        if self.backbone not in BACKBONE_NAMES:  # before its recipe is read
            check_config("training config", {f"backbone must be one of {BACKBONE_NAMES}": False})
        for name, value in BACKBONES[self.backbone].recipe.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        self._check_types()
        checks = {
            "image_size must be 16..512": 16 <= self.image_size <= 512,
            "width must be 2..128": 2 <= self.width <= 128,
            f"stem must be one of {sorted(STEMS)}": self.stem in STEMS,
            "normalization must be 'equalize' or 'scale'": self.normalization
            in ("equalize", "scale"),
            "dropout must be in [0, 1)": 0 <= self.dropout < 1,
            f"augmentation must be one of {sorted(augment.AUGMENTATIONS)}": self.augmentation
            in augment.AUGMENTATIONS,
            "label_smoothing must be in [0, 0.5)": 0 <= self.label_smoothing < 0.5,
            "mixup must be in [0, 10]": 0 <= self.mixup <= 10,
            "weight_average must be in [0, 1)": 0 <= self.weight_average < 1,
            "epochs must be >= 1": self.epochs >= 1,
            "patience must be >= 1": self.patience >= 1,
            "batch_size must be >= 1": self.batch_size >= 1,
            "learning_rate must be > 0": self.learning_rate > 0,
            "warmup_epochs must be >= 0": self.warmup_epochs >= 0,
            "val_fraction and test_fraction must be in (0, 0.5)": 0 < self.val_fraction < 0.5
            and 0 < self.test_fraction < 0.5,
            "target_recall must be in (0, 1]": 0 < self.target_recall <= 1,
            "max_train_images must be >= 0": self.max_train_images >= 0,
            f"distribute must be one of {distribute.NAMES}": distribute.check_name(self.distribute),
        }
        check_config("training config", checks)

    def _check_types(self):
        """Wrong types first: a JSON config can hold anything, and `"seed": "abc"` must
        fail here, not after minutes of scanning the data."""
        simple = {"str": str, "bool": bool, "int": int, "float": (int, float)}
        wrong = []
        for field in dataclasses.fields(self):
            kind = str(field.type).removesuffix(" | None")  # filled from the backbone by now
            value, expected = getattr(self, field.name), simple.get(kind)
            if expected is None:
                continue  # a field of another type checks itself below
            if isinstance(value, bool) != (kind == "bool") or not isinstance(value, expected):
                wrong.append(f"{field.name} must be {kind}, got {value!r}")
        check_config("training config", {message: False for message in wrong})

    @property
    def input_spec(self) -> dict:
        """How to turn an image into model input; copied into every sidecar."""
        return {
            "height": self.image_size,
            "width": self.image_size,
            "channels": 1,
            "color": "grayscale",
            "resize": "bilinear, aspect ratio not kept",
            "normalization": self.normalization,
            "value_range": [0.0, 1.0],
            "layout": "NHWC",
        }

    @classmethod
    def from_json(cls, path: Path, **overrides) -> TrainConfig:
        """Load a config file; command-line overrides that are not None win."""
        values = artifacts.read_json(path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known - {"edgexray_version", "input_spec"}
        if unknown:
            raise EdgexrayError(f"{path}: unknown config keys {sorted(unknown)}")
        values = {k: v for k, v in values.items() if k in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "data" not in values:
            raise EdgexrayError(f"{path}: no 'data' folder given")
        try:
            return cls(**values)
        except TypeError as err:
            raise EdgexrayError(f"{path}: {err}") from None

    def to_json(self) -> dict:
        return {
            **dataclasses.asdict(self),
            "input_spec": self.input_spec,
            "edgexray_version": __version__,
        }


# One split's metrics in metrics.json ("at_0.5" is not a Python name: functional syntax).
SplitMetrics = TypedDict(
    "SplitMetrics",
    {
        "at_threshold": metrics.ClassificationReport,  # at the val-chosen threshold
        "at_0.5": metrics.ClassificationReport,
        "ece_before_temperature": float | None,
    },
)


class TrainingMetrics(TypedDict):
    """metrics.json: what train() returns and writes."""

    edgexray_version: str
    interrupted: bool
    best_epoch: int
    epochs_run: int
    train_seconds: float
    parameters: int
    target_recall: float
    threshold: float
    split: dict[str, dict[str, int]]  # data.split_counts()
    test_source: str
    temperature: float
    val: SplitMetrics
    test: SplitMetrics
    shift_stress_test_val: dict[str, dict[str, float | None]]  # shift -> auc/recall/spec
    history: dict[str, list[float]]
    shift_report: dict


def read_metrics(run_dir: Path) -> TrainingMetrics:
    """The run's metrics.json."""
    return artifacts.read_json(Path(run_dir) / artifacts.METRICS)


def load_config(run_dir: Path) -> TrainConfig:
    """The frozen config of a trained run."""
    return TrainConfig.from_json(Path(run_dir) / artifacts.CONFIG)


def prepare_split(config: TrainConfig, run_dir: Path, on_progress=None) -> list[data.Sample]:
    """Scan the data, split it by patient and save the manifest in the run dir."""
    samples, skipped = data.scan(Path(config.data), on_progress, config.input_spec)
    samples = data.split_by_patient(samples, config.val_fraction, config.test_fraction, config.seed)
    if config.max_train_images:
        # Keep a seeded random subset of train; val and test stay whole.
        rng = np.random.default_rng(config.seed)
        train = [s for s in samples if s.split == "train"]
        keep = {train[i].path for i in rng.permutation(len(train))[: config.max_train_images]}
        samples = [s for s in samples if s.split != "train" or s.path in keep]
    counts = data.split_counts(samples)
    for split in data.SPLITS:
        for label in data.LABELS:
            if counts[split][label] == 0:
                raise EdgexrayError(
                    f"the {split} split has no {label} image: add data or change the fractions"
                )
    data.save_manifest(samples, Path(run_dir) / artifacts.MANIFEST)
    if skipped:
        log.warning("skipped %d unreadable file(s)", len(skipped))
    return samples


def evaluate_splits(
    model, samples, config: TrainConfig, threshold: float, temperature: float = 1.0
) -> dict[str, SplitMetrics]:
    """Metrics on val and test, at the chosen threshold and at 0.5, and the calibration
    error each split had before the temperature was folded in."""
    results = {}
    for split in ("val", "test"):
        paths, labels = data.select(samples, split, Path(config.data))
        probabilities = scoring.keras_probabilities(model, paths, config.input_spec)
        unscaled = metrics.sigmoid(metrics.logit(probabilities) * temperature)
        results[split] = {
            "at_threshold": metrics.classification_report(labels, probabilities, threshold),
            "at_0.5": metrics.classification_report(labels, probabilities, 0.5),
            "ece_before_temperature": metrics.expected_calibration_error(labels, unscaled),
        }
    return results


def shift_stress_test(model, samples, config: TrainConfig, threshold: float) -> dict:
    """Validation metrics recomputed under plausible acquisition changes."""
    paths, labels = data.select(samples, "val", Path(config.data))
    results = {}
    for name, change in augment.SHIFTS.items():
        probabilities = scoring.keras_probabilities(model, paths, config.input_spec, change)
        report = metrics.classification_report(labels, probabilities, threshold)
        results[name] = {k: report[k] for k in ("auc", "recall", "specificity")}
    return results


def shift_report(summary: TrainingMetrics) -> dict:
    """The real shift (val → test at the val threshold) beside each synthetic one.

    When the test split is another site (a Kaggle test/ folder), val → test is the shift a
    user meets. A synthetic shift "moves like the real one" when every metric the real
    shift moves by at least 0.01 moves the same way under it; only such shifts can stand
    in for the real one when no labelled films of a new site are at hand.
    """
    keys = ("auc", "recall", "specificity")
    val, test = summary["val"]["at_threshold"], summary["test"]["at_threshold"]
    real = {k: test[k] - val[k] for k in keys if test[k] is not None and val[k] is not None}
    moved = {k: np.sign(d) for k, d in real.items() if abs(d) >= 0.01}
    stress = summary["shift_stress_test_val"]
    base = stress["none"]
    synthetic = {}
    for name, m in stress.items():
        if name == "none":
            continue
        delta = {k: m[k] - base[k] for k in keys if m[k] is not None and base[k] is not None}
        alike = bool(moved) and all(
            k in delta and np.sign(delta[k]) == sign and abs(delta[k]) >= 0.005
            for k, sign in moved.items()
        )
        synthetic[name] = {"delta": delta, "moves_like_real": alike}
    return {"real_val_to_test": real, "synthetic": synthetic}


def best_checkpoint(path: Path):
    """A Keras callback that saves the model whenever val AUC improves, atomically."""
    from edgexray.compat import keras

    class BestCheckpoint(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best_auc, self.best_epoch = -1.0, None

        def on_epoch_end(self, epoch, logs=None):
            auc = float((logs or {}).get("val_auc", -1.0))
            if auc > self.best_auc:
                self.best_auc, self.best_epoch = auc, epoch + 1
                artifacts.save_keras(self.model, path)

    return BestCheckpoint()


def train(config: TrainConfig, run_dir: Path, verbose: int = 1) -> TrainingMetrics:
    """Split, train with early stopping on val AUC, pick the threshold, write the run dir.

    Ctrl-C stops training but keeps the best checkpoint and still writes the threshold
    and metrics; the returned summary then has interrupted=True. Outputs of later stages
    made from an earlier model in the same run directory are removed at the end.

    Returns:
        The summary also written to metrics.json (by the chief only under multiworker;
        see pipeline/distribute.py).
    """
    from edgexray.compat import keras
    from edgexray.pipeline.model import emits_logit, fold_temperature

    distribute.strategy(config.distribute)  # first: multiworker must start before any TF op
    # Made when the manifest is written, after the data checks; a worker's is private.
    run_dir = distribute.output_dir(run_dir, config.distribute)
    artifacts.require_run_folder(run_dir)  # never train into (and clean) someone's folder
    artifacts.require_writable(run_dir)
    finetune.seed_everything(config.seed)

    started = time.monotonic()
    log.info("scanning %s", config.data)
    samples = prepare_split(config, run_dir)
    artifacts.write_json(run_dir / artifacts.CONFIG, config.to_json())
    counts = data.split_counts(samples)
    log.info(
        "split by patient: train %d, val %d, test %d images",
        counts["train"]["images"],
        counts["val"]["images"],
        counts["test"]["images"],
    )

    data_root = Path(config.data)
    train_paths, train_labels = data.select(samples, "train", data_root)
    val_paths, val_labels = data.select(samples, "val", data_root)
    spec = config.input_spec
    val_set = data.make_dataset(val_paths, val_labels, spec, 64)

    backbone = BACKBONES[config.backbone]
    with distribute.scope(config.distribute):
        model = backbone.build(config)
    if backbone.probe_l2 is not None:
        log.info("fitting the head on the frozen features of %d train films", len(train_paths))
        probe.fit_head(model, train_paths, train_labels, spec, backbone.probe_l2)
    batch_size = distribute.global_batch(config.batch_size, config.distribute)
    steps_per_epoch = int(np.ceil(len(train_paths) / batch_size))
    warmup = min(config.warmup_epochs, config.epochs - 1) * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate / 10 if warmup else config.learning_rate,
        config.epochs * steps_per_epoch - warmup,
        alpha=0.05,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    model_path = run_dir / artifacts.MODEL
    checkpoint = best_checkpoint(model_path)
    stopper = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience)
    interrupted = False
    try:
        history = finetune.fit(
            model,
            train_paths,
            train_labels,
            config,
            learning_rate=schedule,
            epochs=config.epochs,
            batch_size=config.batch_size,
            callbacks=[checkpoint, stopper],
            validation_data=val_set,
            verbose=verbose,
            distribute=config.distribute,
            weight_average=config.weight_average,
            label="train",
        ).history
    except KeyboardInterrupt:
        interrupted = True
        history = model.history.history if model.history else {}
        log.warning("interrupted: keeping the best checkpoint so far")
    if checkpoint.best_epoch is None:
        raise EdgexrayError("training stopped before the first epoch finished; nothing saved")
    train_seconds = time.monotonic() - started

    model = artifacts.load_keras(model_path)
    val_probabilities = scoring.keras_probabilities(model, val_paths, spec)
    temperature = 1.0
    if config.temperature_scaling and emits_logit(model):
        temperature = metrics.fit_temperature(val_labels, metrics.logit(val_probabilities))
        fold_temperature(model, temperature)
        artifacts.save_keras(model, model_path)
        val_probabilities = scoring.keras_probabilities(model, val_paths, spec)
        log.info("temperature %.3f fitted on val, folded into the model", temperature)
    threshold = metrics.threshold_for_recall(val_labels, val_probabilities, config.target_recall)
    summary: TrainingMetrics = {
        "edgexray_version": __version__,
        "interrupted": interrupted,
        "best_epoch": checkpoint.best_epoch,
        "epochs_run": len(history.get("loss", [])),
        "train_seconds": round(train_seconds, 1),
        "parameters": int(model.count_params()),
        "target_recall": config.target_recall,
        "threshold": threshold,
        "split": counts,
        "test_source": test_source(config),
        "temperature": temperature,
        **evaluate_splits(model, samples, config, threshold, temperature),
        "shift_stress_test_val": shift_stress_test(model, samples, config, threshold),
        "history": {k: [round(float(v), 5) for v in vs] for k, vs in history.items()},
    }
    summary["shift_report"] = shift_report(summary)
    artifacts.write_json(run_dir / artifacts.METRICS, summary)
    # Pruned and exported models of an earlier training here no longer match model.keras
    # (nor, with another seed, its split): later stages must not verify or ship them.
    removed = artifacts.remove_derived(run_dir)
    if removed:
        log.info("removed outputs of the previous model: %s", ", ".join(removed))
    return summary


SITE_TEST = "the data's own test/ folder: another site, never used for any choice"
SPLIT_TEST = "a patient-grouped split of the given data: the same site as training"


def test_source(config: TrainConfig) -> str:
    """What the test split is, in words: reports lead with it."""
    return SITE_TEST if "test" in data.find_class_folders(Path(config.data)) else SPLIT_TEST


def summary_lines(summary: TrainingMetrics) -> list[str]:
    """A short human-readable summary of a training run."""
    test = summary["test"]["at_threshold"]
    lines = [
        f"best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
        f"{summary['parameters']:,} parameters, {summary['train_seconds']:.0f} s"
        + (" (interrupted)" if summary["interrupted"] else ""),
        f"threshold {check_threshold(summary['threshold'], artifacts.METRICS):.4f} "
        f"(val recall >= {summary['target_recall']})",
        f"test ({summary.get('test_source', SPLIT_TEST).split(':')[0]}): "
        f"recall {estimate(test['recall'], test['recall_ci95'])}"
        f", specificity {estimate(test['specificity'], test['specificity_ci95'])}"
        f", AUC {test['auc']:.4f}, accuracy {test['accuracy']:.4f}, ECE {test['ece']:.3f}"
        f", n={test['n']}",
    ]
    if summary.get("temperature", 1.0) != 1.0:
        lines.append(
            f"temperature {summary['temperature']:.3f} (fitted on val): ECE val "
            f"{summary['val']['ece_before_temperature']:.3f} -> "
            f"{summary['val']['at_threshold']['ece']:.3f}, test "
            f"{summary['test']['ece_before_temperature']:.3f} -> {test['ece']:.3f}"
        )
    worst = min(summary["shift_stress_test_val"].items(), key=lambda kv: kv[1]["auc"])
    lines.append(f"shift stress test: worst val AUC {worst[1]['auc']:.4f} under {worst[0]}")
    report = summary.get("shift_report")
    if report:
        real = ", ".join(f"{k} {v:+.4f}" for k, v in report["real_val_to_test"].items())
        alike = [n for n, r in report["synthetic"].items() if r["moves_like_real"]]
        lines.append(
            f"real shift val -> test: {real}; synthetic shifts that move alike: "
            f"{', '.join(alike) or 'none'}"
        )
    return lines
