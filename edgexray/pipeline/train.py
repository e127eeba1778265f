"""`edgexray train`: a folder of chest X-rays → a validated float Keras model in a run dir."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgexray import __version__, artifacts
from edgexray.errors import EdgexrayError, check_config
from edgexray.pipeline import data, distribute, metrics

log = logging.getLogger("edgexray")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a trained model; saved as config.json in the run dir."""

    data: str
    image_size: int = 128
    width: int = 12
    normalization: str = "equalize"  # or "scale" (plain /255)
    augment: bool = True
    dropout: float = 0.2
    epochs: int = 20
    patience: int = 5
    batch_size: int = 32
    learning_rate: float = 2e-3
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    target_recall: float = 0.97
    seed: int = 42
    max_train_images: int = 0  # 0 = all; a smaller number for quick experiments and tests
    distribute: str = "none"  # none, mirrored or multiworker (see pipeline/distribute.py)

    def __post_init__(self):
        checks = {
            "image_size must be 16..512": 16 <= self.image_size <= 512,
            "width must be 2..128": 2 <= self.width <= 128,
            "normalization must be 'equalize' or 'scale'": self.normalization
            in ("equalize", "scale"),
            "dropout must be in [0, 1)": 0 <= self.dropout < 1,
            "epochs must be >= 1": self.epochs >= 1,
            "patience must be >= 1": self.patience >= 1,
            "batch_size must be >= 1": self.batch_size >= 1,
            "learning_rate must be > 0": self.learning_rate > 0,
            "val_fraction and test_fraction must be in (0, 0.5)": 0 < self.val_fraction < 0.5
            and 0 < self.test_fraction < 0.5,
            "target_recall must be in (0, 1]": 0 < self.target_recall <= 1,
            "max_train_images must be >= 0": self.max_train_images >= 0,
            f"distribute must be one of {distribute.NAMES}": distribute.check_name(self.distribute),
        }
        check_config("training config", checks)

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


def load_config(run_dir: Path) -> TrainConfig:
    """The frozen config of a trained run."""
    return TrainConfig.from_json(Path(run_dir) / artifacts.CONFIG)


def prepare_split(config: TrainConfig, run_dir: Path, on_progress=None) -> list[data.Sample]:
    """Scan the data, split it by patient and save the manifest in the run dir."""
    samples, skipped = data.scan(Path(config.data), on_progress)
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


def predict(model, paths: list[str], input_spec: dict, batch_size: int = 64, change=None):
    """Pneumonia probabilities of a Keras model for image files, in order."""
    dataset = data.make_dataset(
        paths, np.zeros(len(paths)), input_spec, batch_size, change=change
    ).map(lambda image, label: image)
    return model.predict(dataset, verbose=0).reshape(-1).astype(np.float64)


def evaluate_splits(model, samples, config: TrainConfig, threshold: float) -> dict:
    """Metrics on val and test, at the chosen threshold and at 0.5."""
    results = {}
    for split in ("val", "test"):
        paths, labels = data.select(samples, split, Path(config.data))
        probabilities = predict(model, paths, config.input_spec)
        results[split] = {
            "at_threshold": metrics.classification_report(labels, probabilities, threshold),
            "at_0.5": metrics.classification_report(labels, probabilities, 0.5),
        }
    return results


def shift_stress_test(model, samples, config: TrainConfig, threshold: float) -> dict:
    """Validation metrics recomputed under plausible acquisition changes."""
    paths, labels = data.select(samples, "val", Path(config.data))
    results = {}
    for name, change in data.SHIFTS.items():
        probabilities = predict(model, paths, config.input_spec, change=change)
        report = metrics.classification_report(labels, probabilities, threshold)
        results[name] = {k: report[k] for k in ("auc", "recall", "specificity")}
    return results


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


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Weights that make both classes count equally in the loss (3:1 imbalance here)."""
    counts = np.bincount(labels, minlength=2)
    return {label: len(labels) / (2.0 * counts[label]) for label in (0, 1)}


def train(config: TrainConfig, run_dir: Path, verbose: int = 1) -> dict:
    """Split, train with early stopping on val AUC, pick the threshold, write the run dir.

    Ctrl-C stops training but keeps the best checkpoint and still writes the threshold
    and metrics; the returned summary then has interrupted=True. Outputs of later stages
    made from an earlier model in the same run directory are removed at the end.

    Returns:
        The summary also written to metrics.json (by the chief only under multiworker;
        see pipeline/distribute.py).
    """
    from edgexray.compat import keras, tf
    from edgexray.pipeline.model import build_model

    distribute.strategy(config.distribute)  # first: multiworker must start before any TF op
    run_dir = distribute.output_dir(run_dir, config.distribute)  # a worker's is private
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    started = time.monotonic()
    log.info("scanning %s", config.data)
    samples = prepare_split(config, run_dir)
    artifacts.write_json(run_dir / artifacts.CONFIG, config.to_json())
    counts = data.split_counts(samples)
    log.info(
        "split by patient: train %d, val %d, test %d images",
        counts["train"]["images"], counts["val"]["images"], counts["test"]["images"],
    )  # fmt: skip

    data_root = Path(config.data)
    train_paths, train_labels = data.select(samples, "train", data_root)
    val_paths, val_labels = data.select(samples, "val", data_root)
    spec = config.input_spec
    batch_size = distribute.global_batch(config.batch_size, config.distribute)
    train_set = distribute.shard(data.make_dataset(
        train_paths, train_labels, spec, batch_size,
        training=config.augment, seed=config.seed,
    ), config.distribute)  # fmt: skip
    val_set = data.make_dataset(val_paths, val_labels, spec, 64)
    val_set = distribute.shard(val_set, config.distribute)

    with distribute.scope(config.distribute):
        model = build_model(config.image_size, config.width, config.dropout, config.seed)
        steps = config.epochs * int(np.ceil(len(train_paths) / batch_size))
        learning_rate = distribute.learning_rate(config.learning_rate, config.distribute)
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
        model.compile(
            optimizer=keras.optimizers.Adam(schedule),
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(name="auc", num_thresholds=1000)],
        )
    model_path = run_dir / artifacts.MODEL
    checkpoint = best_checkpoint(model_path)
    stopper = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience)
    interrupted = False
    try:
        history = model.fit(
            train_set,
            validation_data=val_set,
            epochs=config.epochs,
            class_weight=class_weights(train_labels),
            callbacks=[checkpoint, stopper],
            verbose=verbose,
        ).history
    except KeyboardInterrupt:
        interrupted = True
        history = model.history.history if model.history else {}
        log.warning("interrupted: keeping the best checkpoint so far")
    if checkpoint.best_epoch is None:
        raise EdgexrayError("training stopped before the first epoch finished; nothing saved")
    train_seconds = time.monotonic() - started

    model = artifacts.load_keras(model_path)
    val_probabilities = predict(model, val_paths, spec)
    threshold = metrics.threshold_for_recall(val_labels, val_probabilities, config.target_recall)
    summary = {
        "edgexray_version": __version__,
        "interrupted": interrupted,
        "best_epoch": checkpoint.best_epoch,
        "epochs_run": len(history.get("loss", [])),
        "train_seconds": round(train_seconds, 1),
        "parameters": int(model.count_params()),
        "target_recall": config.target_recall,
        "threshold": threshold,
        "split": counts,
        "note": "val and test are patient-grouped splits of the given data, not the "
        "official Kaggle test set",
        **evaluate_splits(model, samples, config, threshold),
        "shift_stress_test_val": shift_stress_test(model, samples, config, threshold),
        "history": {k: [round(float(v), 5) for v in vs] for k, vs in history.items()},
    }
    artifacts.write_json(run_dir / artifacts.METRICS, summary)
    # Pruned and exported models of an earlier training here no longer match model.keras
    # (nor, with another seed, its split): later stages must not verify or ship them.
    removed = artifacts.remove_derived(run_dir)
    if removed:
        log.info("removed outputs of the previous model: %s", ", ".join(removed))
    return summary


def summary_lines(summary: dict) -> list[str]:
    """A short human-readable summary of a training run."""
    test = summary["test"]["at_threshold"]
    lines = [
        f"best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
        f"{summary['parameters']:,} parameters, {summary['train_seconds']:.0f} s"
        + (" (interrupted)" if summary["interrupted"] else ""),
        f"threshold {summary['threshold']:.4f} (val recall >= {summary['target_recall']})",
        "test split (patient-grouped, held out): "
        f"recall {test['recall']:.4f} [{test['recall_ci95'][0]:.3f}-{test['recall_ci95'][1]:.3f}]"
        f", specificity {test['specificity']:.4f} "
        f"[{test['specificity_ci95'][0]:.3f}-{test['specificity_ci95'][1]:.3f}]"
        f", AUC {test['auc']:.4f}, n={test['n']}",
    ]
    worst = min(summary["shift_stress_test_val"].items(), key=lambda kv: kv[1]["auc"])
    lines.append(f"shift stress test: worst val AUC {worst[1]['auc']:.4f} under {worst[0]}")
    return lines
