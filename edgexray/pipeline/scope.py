"""Fit the out-of-scope guard's statistics: the sidecar's `scope` block.

The guard (edgexray/edge_runtime/scope.py) asks how far a film's pooled features, the
model's second output (edgexray/export/features.py), lie from the training films'. Here
that distribution is summarised, from the model's own int8 features of the TRAIN split
films as the device computes them:

- mean and a Ledoit-Wolf shrinkage covariance (96 features from 4433 films is well
  determined, and the fitted shrinkage is small, but it keeps the inverse stable for
  smaller runs); the block stores the whitening matrix W with precision = W^T W, so the
  distance is one matrix-vector product |W (f - mean)| on the device;
- the cut-off is chosen on the VAL split, films the statistics never saw: the smallest
  distance that at least `coverage` (99%) of the val films are within.

Why Mahalanobis on the raw features: on the shipped model it beat, on the same val rule,
square-root or log features, class-conditional means, PCA subspaces and their
residuals, and stronger shrinkage (benchmarks/README.md, "Out-of-scope guard").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgexray import artifacts
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.preprocess import resized_grayscale
from edgexray.edge_runtime.scope import SCOPE_SCHEMA, distance, problem
from edgexray.errors import EdgexrayError

log = logging.getLogger("edgexray")

COVERAGE = 0.99  # share of val films that must pass the guard (issue 18)
# The Kaggle set's films are of children aged 1 to 5 (Kermany et al. 2018): a DICOM film
# whose tags give another age is out of scope. None when the training ages are unknown.
TRAINED_AGES = {"min": 1, "max": 5, "source": "Kermany et al. 2018: children aged 1-5"}
MIN_SHRINKAGE = 1e-6
DIGITS = 9  # significant digits kept in the sidecar: float32 features need no more


def ledoit_wolf(centred: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit-Wolf (2004) shrinkage of the sample covariance towards a scaled identity.

    Returns:
        (covariance, shrinkage in [0, 1]).
    """
    count, size = centred.shape
    sample = centred.T @ centred / count
    target = np.trace(sample) / size
    distance_to_target = float(np.sum((sample - target * np.eye(size)) ** 2))
    squares = centred**2
    spread = float(np.sum(squares.T @ squares) / count - np.sum(sample**2)) / count
    if distance_to_target == 0:  # already a multiple of the identity
        return sample, 0.0
    shrinkage = min(max(spread, 0.0), distance_to_target) / distance_to_target
    # Never exactly 0: a feature that never varies (a dead ReLU) would leave the
    # covariance singular. The shipped model's fitted value, 0.0003, is far above this.
    shrinkage = max(shrinkage, MIN_SHRINKAGE)
    return (1 - shrinkage) * sample + shrinkage * target * np.eye(size), shrinkage


def cutoff_for(distances: np.ndarray, coverage: float = COVERAGE) -> tuple[float, int]:
    """The smallest distance that at least `coverage` of the films are within.

    Returns:
        (cut-off, k): the k-th smallest distance, k = ceil(coverage * n).
    """
    ordered = np.sort(np.asarray(distances, dtype=np.float64))
    k = max(1, math.ceil(coverage * len(ordered) - 1e-9))
    return float(ordered[k - 1]), k


def _rounded(values: np.ndarray):
    return np.vectorize(lambda v: float(f"{v:.{DIGITS}g}"))(values).tolist()


def fit(
    train_features: np.ndarray,
    val_features: np.ndarray,
    feature_output: dict,
    *,
    coverage: float = COVERAGE,
    train_counts: dict | None = None,
    val_counts: dict | None = None,
    ages: dict | None = TRAINED_AGES,
) -> dict:
    """The sidecar's scope block from the features of the train and val films.

    Args:
        feature_output: {"index", "name", "size"} of the model's features output.
        train_counts, val_counts: films and patients of each split, recorded as they are.

    Raises:
        EdgexrayError: too few films, or features of the wrong size.
    """
    train = np.asarray(train_features, dtype=np.float64)
    val = np.asarray(val_features, dtype=np.float64)
    size = feature_output["size"]
    if train.ndim != 2 or train.shape[1] != size or val.ndim != 2 or val.shape[1] != size:
        raise EdgexrayError(f"scope statistics need {size} features per film")
    if len(train) < 2 or len(val) < 1:
        raise EdgexrayError("scope statistics need at least 2 train films and 1 val film")
    mean = train.mean(axis=0)
    covariance, shrinkage = ledoit_wolf(train - mean)
    # precision = L L^T (Cholesky); W = L^T gives |W x|^2 = x^T precision x.
    whitening = np.linalg.cholesky(np.linalg.inv(covariance)).T
    block = {
        "schema": SCOPE_SCHEMA,
        "feature_output": dict(feature_output),
        "method": "Mahalanobis distance of the pooled features from the train films' mean, "
        "Ledoit-Wolf shrinkage covariance; distance = |whitening @ (features - mean)|",
        "mean": _rounded(mean),
        "whitening": _rounded(whitening),
        "shrinkage": float(f"{shrinkage:.{DIGITS}g}"),
        "cutoff": 0.0,
        "patient_age_years": ages,
    }
    # The cut-off from the rounded statistics, exactly as every device computes it.
    val_distances = np.array([distance(f, block) for f in val])
    cutoff, k = cutoff_for(val_distances, coverage)
    block["cutoff"] = cutoff
    block["cutoff_rule"] = (
        f"the {k}th smallest val distance of {len(val)}: at least {coverage:.0%} of the "
        "val films are within it"
    )
    block["coverage"] = coverage
    block["fitted_on"] = {"split": "train", **(train_counts or {"films": len(train)})}
    block["chosen_on"] = {
        "split": "val",
        **(val_counts or {"films": len(val)}),
        "within_cutoff": int(np.sum(val_distances <= cutoff)),
    }
    found = problem(block)
    if found:  # a bug here, not bad input: the block must pass its own validation
        raise EdgexrayError(f"the fitted scope block is invalid: {found}")
    return block


def features_of(classifier: Classifier, grays: Iterable[np.ndarray]) -> np.ndarray:
    """The pooled features of resized 8-bit films, exactly as the device computes them.

    Raises:
        EdgexrayError: the model has no features output.
    """
    rows = []
    for gray in grays:
        classifier.run(classifier.tensor_of(gray))
        features = classifier.features()
        if features is None:
            raise EdgexrayError(f"{classifier.model_path} has no pooled-features output")
        rows.append(features)
    return np.array(rows, dtype=np.float64)


def resized(paths: Iterable[str], input_spec: dict) -> list[np.ndarray]:
    """Each film resized to the model input, 8-bit (small: 16 KB a film at 128 px)."""
    return [resized_grayscale(path, input_spec) for path in paths]


def attach(
    model_path: Path,
    train_grays: list[np.ndarray],
    val_grays: list[np.ndarray],
    *,
    train_counts: dict | None = None,
    val_counts: dict | None = None,
    coverage: float = COVERAGE,
) -> dict:
    """Fit the scope block for a model with a features output and write it into its
    sidecar, inside the model and in the readable copy (atomically); the model's
    flatbuffer, and so its identity, keeps every byte.

    Returns:
        The scope block.
    """
    classifier = Classifier(model_path, check_scope=False)
    output = classifier.feature_output()
    if output is None:
        raise EdgexrayError(f"{model_path} has no pooled-features output (second output)")
    block = fit(
        features_of(classifier, train_grays),
        features_of(classifier, val_grays),
        output,
        coverage=coverage,
        train_counts=train_counts,
        val_counts=val_counts,
    )
    sidecar = {**classifier.sidecar, "scope": block}
    artifacts.write_model(model_path, Path(model_path).read_bytes(), sidecar)
    log.info(
        "%s: scope cut-off %.2f (%d of %d val films within)",
        Path(model_path).name,
        block["cutoff"],
        block["chosen_on"]["within_cutoff"],
        len(val_grays),
    )
    return block
