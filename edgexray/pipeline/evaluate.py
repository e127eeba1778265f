"""`edgexray evaluate`: clinical metrics of a .tflite or Keras model on a folder of X-rays.

A .tflite model is fed by the edge runtime's own code (`edge_runtime.preprocess`
and `run_interpreter`, reading the sidecar), so what is evaluated is what ships. A Keras
model is read from its run directory, whose config.json says how to feed it and whose
metrics.json holds the threshold chosen on the validation split.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np

from edgexray import artifacts, chatter
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.readers import film_files as image_files
from edgexray.edge_runtime.scope import OUT_OF_SCOPE
from edgexray.errors import EdgexrayError, check_threshold
from edgexray.formatting import interval, number
from edgexray.pipeline import data, metrics, scoring

log = logging.getLogger("edgexray")

PREDICTION_FIELDS = ("path", "label", "probability", "predicted")


@dataclass(frozen=True)
class Images:
    """The labelled image files an evaluation runs on, and where they came from."""

    paths: list[str]
    labels: np.ndarray  # 0 NORMAL, 1 PNEUMONIA
    source: str  # the data folder or run directory, as given
    split: str  # the split used, or "" for a plain NORMAL/ PNEUMONIA/ folder
    recorded: bool = False  # a run's manifest lists these files: each of them must be there


@dataclass(frozen=True)
class Model:
    """A model ready to score images, with its decision threshold."""

    path: Path
    kind: str  # "tflite" or "keras"
    threshold: float
    scorer: scoring.Scorer
    labels: tuple[str, ...] = data.LABELS  # what it prints: labels[probability >= threshold]

    def printed(self, probabilities, in_scope=None) -> np.ndarray:
        """The label the device prints for each film (the gate compares these):
        OUT_OF_SCOPE where in_scope (a Scores.in_scope row) is 0."""
        called = (np.asarray(probabilities) >= self.threshold).astype(int)
        labels = np.asarray(self.labels, dtype=object)[called]
        if in_scope is not None:
            labels[np.asarray(in_scope) == 0] = OUT_OF_SCOPE
        return labels

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def input_spec(self) -> dict:
        return self.scorer.input_spec


# --- where the images come from ---------------------------------------------------------


def _is_run_dir(folder: Path) -> bool:
    return (folder / artifacts.MANIFEST).is_file() and (folder / artifacts.CONFIG).is_file()


def _class_files(class_root: Path) -> tuple[list[str], list[int]]:
    """Image files under NORMAL/ and PNEUMONIA/; one class may be absent (with a warning)."""
    per_label = []
    for label in data.LABELS:
        folders = [
            c for c in class_root.iterdir() if c.is_dir() and c.name.lower() == label.lower()
        ]
        per_label.append(sorted(str(p) for folder in folders for p in image_files(folder)))
    if not any(per_label):
        raise EdgexrayError(
            f"{class_root} holds no .jpeg, .jpg, .png or DICOM images in NORMAL/ or PNEUMONIA/"
        )
    for label, files in zip(data.LABELS, per_label, strict=True):
        if not files:
            # Recall or specificity is then undefined, but the other one is still worth having.
            log.warning("%s/%s holds no images", class_root, label)
    labels = [index for index, files in enumerate(per_label) for _ in files]
    return [path for files in per_label for path in files], labels


def find_images(source: Path, split: str = "test") -> Images:
    """The labelled images to evaluate on.

    Args:
        source: a folder with NORMAL/ and PNEUMONIA/ (split is then ignored), a Kaggle
            root with train/ val/ test/ (then its `split` folder), or a run directory
            (then the manifest's `split` rows, under the run's data root).
        split: "train", "val" or "test".

    Raises:
        EdgexrayError: unknown split, missing folder, or no images.
    """
    source = Path(source)
    if split not in data.SPLITS:
        raise EdgexrayError(f"unknown split {split!r}: use one of {', '.join(data.SPLITS)}")
    if source.is_dir() and _is_run_dir(source):
        paths, labels = data.run_split(source, split)
        return Images(paths, labels, str(source), split, recorded=True)
    folders = data.find_class_folders(source)
    if "" in folders:
        paths, labels = _class_files(folders[""])
        return Images(paths, np.array(labels, dtype=np.int64), str(source), "")
    if split not in folders:
        raise EdgexrayError(f"{source} has no {split}/ folder (found: {', '.join(folders)})")
    paths, labels = _class_files(folders[split])
    return Images(paths, np.array(labels, dtype=np.int64), str(source), split)


# --- the models ---------------------------------------------------------------------------


def _tflite_model(path: Path, threshold: float | None) -> Model:
    try:
        with chatter.quiet():  # the first allocation of a process announces XNNPACK
            classifier = Classifier(path)
    except InferenceError as err:
        raise EdgexrayError(str(err)) from None
    except RecursionError:
        raise EdgexrayError(f"{path.with_suffix('.json')}: JSON nested too deeply") from None
    if threshold is None:
        threshold = check_threshold(classifier.sidecar["threshold"], str(path.with_suffix(".json")))
    scorer = scoring.tflite_scorer(
        classifier.interpreter,
        classifier.sidecar["input"],
        str(path),
        classifier.output_kind,
        scope_block=classifier.scope,
    )
    return Model(path, "tflite", threshold, scorer, tuple(classifier.labels))


def _run_threshold(path: Path) -> float:
    """The val-chosen threshold a run recorded for this Keras model.

    model.keras has it in metrics.json; pruned.keras in prune.json, chosen again on val
    because pruning shifts the probabilities.
    """
    from edgexray.pipeline.prune import PRUNE_REPORT

    if path.name == artifacts.PRUNED:
        report, keys = path.parent / PRUNE_REPORT, ("val", "threshold")
    else:
        if path.name != artifacts.MODEL:
            log.warning("%s: using the float model's threshold from metrics.json", path.name)
        report, keys = path.parent / artifacts.METRICS, ("threshold",)
    if not report.is_file():
        raise EdgexrayError(f"{report} is missing (stage not finished?): give --threshold")
    value = artifacts.read_json(report)
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return check_threshold(value, f"{report} ({'.'.join(keys)})")


def _keras_model(path: Path, threshold: float | None) -> Model:
    from edgexray.pipeline.train import load_config

    run_dir = path.parent
    if not (run_dir / artifacts.CONFIG).is_file():
        raise EdgexrayError(
            f"{path.name} must sit in its run directory: {run_dir / artifacts.CONFIG} "
            "(how to feed the model) is missing"
        )
    input_spec = load_config(run_dir).input_spec
    if threshold is None:
        threshold = _run_threshold(path)
    model = artifacts.load_keras(path)
    return Model(path, "keras", threshold, scoring.keras_scorer(model, input_spec, str(path)))


def load_model(path: Path, threshold: float | None = None) -> Model:
    """A .tflite (with its sidecar) or a .keras model from a run directory.

    Args:
        path: the model file.
        threshold: overrides the sidecar's (or the run's) decision threshold.

    Raises:
        EdgexrayError: missing file or sidecar, sha256 mismatch, unloadable model, or a
            Keras model outside its run directory.
    """
    path = Path(path)
    if threshold is not None:
        threshold = check_threshold(threshold, "--threshold")
    if not path.is_file():
        raise EdgexrayError(f"model not found: {path}")
    if path.suffix.lower() == ".tflite":
        return _tflite_model(path, threshold)
    if path.suffix.lower() == ".keras":
        return _keras_model(path, threshold)
    raise EdgexrayError(f"{path}: expected a .tflite or .keras model")


# --- scoring ------------------------------------------------------------------------------


def score(models: list[Model], images: Images) -> scoring.Scores:
    """Every model's probabilities for the readable images; see scoring.score."""
    return scoring.score([m.scorer for m in models], images.paths, images.labels)


class OutOfScopeCounts(TypedDict):
    """Films the device refuses as out of scope, by class."""

    films: int
    pneumonia: int
    normal: int


class ClinicalSummary(metrics.ClassificationReport):
    """summarize(): the classification report, the class counts behind it, and the films
    out of scope (None when the model was not judged)."""

    pneumonia: int
    normal: int
    out_of_scope: OutOfScopeCounts | None


def summarize(labels, probabilities, threshold: float, in_scope=None) -> ClinicalSummary:
    """Every clinical metric from labels, probabilities and a threshold (pure, no I/O).

    metrics.classification_report plus the class counts, so a reader sees how many
    pneumonia cases stand behind the recall and its confidence interval, and the films
    out of scope (`out_of_scope`, None when the model was not judged): counted separately,
    and a pneumonia film among them counts as missed (see classification_report).

    Args:
        in_scope: a Scores.in_scope row (1 in, 0 out of scope, NaN not judged), or None.
    """
    labels = np.asarray(labels).astype(int)
    refused = refusals(in_scope)
    return {
        **metrics.classification_report(labels, probabilities, threshold, refused),
        "pneumonia": int(labels.sum()),
        "normal": int(len(labels) - labels.sum()),
        "out_of_scope": refusal_counts(labels, refused),
    }


def refusals(in_scope) -> np.ndarray | None:
    """Per film, True where the device refuses it as out of scope; None when the model
    was not judged (no scope statistics, a Keras model)."""
    if in_scope is None or np.all(np.isnan(in_scope)):
        return None
    return np.asarray(in_scope) == 0


def refusal_counts(labels, refused) -> OutOfScopeCounts | None:
    """The films refusals() marks, by class (None when the model was not judged)."""
    if refused is None:
        return None
    labels = np.asarray(labels).astype(int)
    return {
        "films": int(refused.sum()),
        "pneumonia": int(np.sum(refused & (labels == 1))),
        "normal": int(np.sum(refused & (labels == 0))),
    }


NOT_JUDGED = "not judged (the model has no scope statistics)"


def out_of_scope_counts(report: dict) -> str | None:
    """ "N of M films (P pneumonia, Q normal)" refused as out of scope, or None if not judged."""
    counts = report.get("out_of_scope")
    if counts is None:
        return None
    return (
        f"{counts['films']} of {report['n']} films ({counts['pneumonia']} pneumonia, "
        f"{counts['normal']} normal)"
    )


def scope_line(report: dict) -> str:
    """One line: how many films were out of scope, of which class, or why none were judged."""
    counts = out_of_scope_counts(report)
    if counts is None:
        return NOT_JUDGED
    return (
        f"{counts}: labelled OUT_OF_SCOPE on a device; a pneumonia film among them counts as missed"
    )


def write_predictions(path: Path, paths, labels, probabilities, printed) -> Path:
    """Per-image CSV (path, label, probability, predicted), written atomically; predicted
    is what the device prints (`Model.printed`), OUT_OF_SCOPE included."""

    def write(temporary: Path):
        with open(temporary, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(PREDICTION_FIELDS)
            rows = zip(paths, labels, probabilities, printed, strict=True)
            for file, label, probability, predicted in rows:
                writer.writerow([file, data.LABELS[int(label)], f"{probability:.6f}", predicted])

    return artifacts.atomic_write(Path(path), write)


def evaluate(
    model_path: Path,
    data_path: Path,
    split: str = "test",
    threshold: float | None = None,
    predictions_csv: Path | None = None,
) -> dict:
    """Clinical metrics of one model on one set of images.

    Args:
        model_path: a .tflite with its sidecar, or a .keras model in its run directory.
        data_path: a NORMAL/ PNEUMONIA/ folder, a Kaggle root or a run directory.
        split: which split of a Kaggle root or run directory.
        threshold: overrides the model's own threshold.
        predictions_csv: where to write per-image predictions, if given.

    Returns:
        summarize()'s fields plus model, kind, data, split, skipped (count),
        skipped_files and predictions_csv.

    Raises:
        EdgexrayError: bad model or data, or no readable image.
    """
    images = find_images(Path(data_path), split)
    model = load_model(Path(model_path), threshold)
    log.info("evaluating %s on %d images from %s", model.path.name, len(images.paths), data_path)
    scores = score([model], images)
    if not len(scores):
        raise EdgexrayError(f"none of the {len(images.paths)} images in {data_path} is readable")
    skipped = list(scores.skipped)
    if skipped:
        log.warning("skipped %d unreadable file(s)", len(skipped))
    paths, labels, probabilities = scores.paths, scores.labels, scores.probabilities[0]
    in_scope = scores.in_scope[0]
    report = {
        "model": str(model_path),
        "kind": model.kind,
        "data": str(data_path),
        "split": images.split,
        **summarize(labels, probabilities, model.threshold, in_scope),
        "skipped": len(skipped),
        "skipped_files": skipped,
        "predictions_csv": None,
    }
    if predictions_csv is not None:
        printed = model.printed(probabilities, in_scope)
        write_predictions(predictions_csv, paths, labels, probabilities, printed)
        report["predictions_csv"] = str(predictions_csv)
    return report


# --- presentation (the CLI prints these) ----------------------------------------------------


def report_lines(report: dict) -> list[str]:
    """A readable table of an evaluate() report."""
    (tn, fp), (fn, tp) = report["confusion_matrix"]
    where = report["data"] + (f" ({report['split']} split)" if report["split"] else "")
    skipped = f", {report['skipped']} unreadable skipped" if report["skipped"] else ""
    return [
        f"model        {report['model']} ({report['kind']}, threshold {report['threshold']:.4f})",
        f"data         {where}: {report['n']} images{skipped}",
        f"recall       {number(report['recall'])}  {interval(report['recall_ci95'])}"
        f"  {tp}/{tp + fn} pneumonia found (95% Wilson CI)",
        f"specificity  {number(report['specificity'])}  {interval(report['specificity_ci95'])}"
        f"  {tn}/{tn + fp} normal called normal",
        f"precision    {number(report['precision'])}",
        f"f1           {number(report['f1'])}",
        f"accuracy     {number(report['accuracy'])}",
        f"AUC          {number(report['auc'])}",
        f"ECE          {number(report['ece'])}  (expected calibration error, 10 bins)",
        "confusion    true \\ predicted   NORMAL  PNEUMONIA",
        f"             NORMAL           {tn:7d}  {fp:9d}",
        f"             PNEUMONIA        {fn:7d}  {tp:9d}",
        f"out of scope {scope_line(report)}",
    ] + ([f"predictions  {report['predictions_csv']}"] if report["predictions_csv"] else [])
