"""Fit the out-of-scope guard's statistics: the sidecar's `scope` block.

The guard (edgexray/edge_runtime/scope.py) asks how far a film's pooled features, the
model's second output (edgexray/export/features.py), lie from the training films'. Here
that distribution is summarised, from the model's own int8 features of the TRAIN split
films as the device computes them:

- mean and a Ledoit-Wolf shrinkage covariance (96 features from 4433 films is well
  determined, and the fitted shrinkage is small, but it keeps the inverse stable for
  smaller runs); the block stores the whitening matrix W with precision = W^T W, so the
  distance is one matrix-vector product |W (f - mean)| on the device;
- for more than FULL_COVARIANCE_MAX_FEATURES features (EfficientNet-Lite0's 1280, whose
  full W is 15 MB of JSON), the covariance keeps only its SUBSPACE_COMPONENTS leading
  principal directions with their variances, and every other direction gets their mean
  variance (probabilistic PCA's covariance): the block stores those k directions scaled
  to unit variance, k x 1280 numbers, and the device adds the part of the film's
  features outside them as one term (edge_runtime/scope.py, scope/2). On Lite0 this
  refused as much as the full covariance or more, in every group (benchmarks/README.md);
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
from edgexray.edge_runtime.scope import (
    SCOPE_SCHEMA,
    SUBSPACE_SCHEMA,
    TURNS,
    Statistics,
    problem,
)
from edgexray.errors import EdgexrayError
from edgexray.pipeline import decode_cache

log = logging.getLogger("edgexray")

COVERAGE = 0.99  # share of val films that must pass the guard (issue 18)
# The Kaggle set's films are of children aged 1 to 5 (Kermany et al. 2018): a DICOM film
# whose tags give another age is out of scope. None when the training ages are unknown.
TRAINED_AGES = {"min": 1, "max": 5, "source": "Kermany et al. 2018: children aged 1-5"}
MIN_SHRINKAGE = 1e-6
# Up to this many features the block holds the full covariance (scope/1: under 1 MB of
# JSON at 256); above it, the leading components and one residual variance (scope/2).
FULL_COVARIANCE_MAX_FEATURES = 256
# Chosen on val and the refusal groups of Lite0's features (frozen and fine-tuned): 8 to
# 64 components refuse about alike, and more than the full covariance; 32 keeps the block
# at 642 KB against 15 MB (benchmarks/README.md).
SUBSPACE_COMPONENTS = 32
DIGITS = 9  # significant digits kept in the sidecar: float32 features need no more
# The orientation check (edge_runtime/scope.py TURNS) may call this share of the upright
# val films turned; its margin grows in these steps of distance until it does no more.
ORIENTATION_FALSE_REFUSALS = 0.001
MARGIN_STEP = 0.25
# ... and must then catch at least this share of the val films turned each way.
MIN_TURNED_CAUGHT = 0.9


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


def principal_subspace(centred: np.ndarray, components: int) -> tuple[np.ndarray, ...]:
    """The leading principal directions of centred rows, and what is left.

    Returns:
        (directions (k, size), their variances (k), the mean variance of every other
        direction), from the sample covariance.
    """
    count, size = centred.shape
    if not 1 <= components < min(size, count - 1):
        raise EdgexrayError(
            f"the scope subspace needs 1 to {min(size, count - 1) - 1} components, "
            f"not {components} ({count} films of {size} features)"
        )
    covariance = centred.T @ centred / count
    variances, directions = np.linalg.eigh(covariance)  # ascending
    kept = np.argsort(variances)[::-1][:components]
    residual = (np.trace(covariance) - variances[kept].sum()) / (size - components)
    if not residual > 0:
        raise EdgexrayError("the features have no variance outside the scope subspace")
    return directions[:, kept].T, variances[kept], float(residual)


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
    components: int | None = None,
    turned_val_features: dict[str, np.ndarray] | None = None,
) -> dict:
    """The sidecar's scope block from the features of the train and val films.

    Args:
        feature_output: {"index", "name", "size"} of the model's features output.
        turned_val_features: the val films' features once turned, by TURNS name, for the
            orientation check (`orientation_block`); None: the block has none.
        train_counts, val_counts: films and patients of each split, recorded as they are.
        components: principal directions that keep their own variance; the size of the
            features for the full covariance (scope/1). None: the full covariance up to
            FULL_COVARIANCE_MAX_FEATURES features, else SUBSPACE_COMPONENTS.

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
    if components is None:
        components = size if size <= FULL_COVARIANCE_MAX_FEATURES else SUBSPACE_COMPONENTS
    mean = train.mean(axis=0)
    form = _full(train - mean) if components == size else _subspace(train - mean, components)
    block = {
        "schema": form.pop("schema"),
        "feature_output": dict(feature_output),
        "method": form.pop("method"),
        "mean": _rounded(mean),
        **form,
        "cutoff": 0.0,
        "patient_age_years": ages,
    }
    # The cut-off from the rounded statistics, exactly as every device computes it.
    statistics = Statistics.of(block)
    val_distances = np.array([statistics.distance(f) for f in val])
    cutoff, k = cutoff_for(val_distances, coverage)
    block["cutoff"] = cutoff
    block["cutoff_rule"] = (
        f"the {k}th smallest val distance of {len(val)}: at least {coverage:.0%} of the "
        "val films are within it"
    )
    block["coverage"] = coverage
    orientation = turned_val_features and orientation_block(
        statistics, cutoff, val_distances, turned_val_features
    )
    if orientation:
        block["orientation"] = orientation
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


def orientation_block(
    statistics: Statistics,
    cutoff: float,
    val_distances: np.ndarray,
    turned_val_features: dict[str, np.ndarray],
) -> dict | None:
    """The orientation check's turns and margin, chosen on the val films (TURNS: turned
    upside down, or as negatives).

    The margin is the smallest multiple of MARGIN_STEP at which the check refuses at most
    ORIENTATION_FALSE_REFUSALS of the val films as they came (a val film turned back that
    looks more like the training films than as it came is one the check would wrongly
    refuse). A turn is checked only if, at that margin, the guard catches at least
    MIN_TURNED_CAUGHT of the val films so turned: below that the model cannot tell the
    turned film from the upright one well enough for the check to be more than noise;
    the margin is then chosen again for the turns kept. None when no turn is kept.
    """
    within = val_distances <= cutoff
    backs = {
        name: np.array([statistics.distance(f) for f in features])
        for name, features in turned_val_features.items()
    }
    while backs:
        margin, refused = _margin(backs, cutoff, val_distances, within)
        caught = {  # the val films turned: `back` is their upright film
            name: (back > cutoff) | (within & (val_distances < back - margin))
            for name, back in backs.items()
        }
        weak = [name for name, hits in caught.items() if hits.mean() < MIN_TURNED_CAUGHT]
        if not weak:
            return {
                "turns": list(backs),
                "margin": margin,
                "rule": (
                    f"the smallest multiple of {MARGIN_STEP:g} at which at most "
                    f"{ORIENTATION_FALSE_REFUSALS:.1%} of the upright val films are called turned"
                ),
                "chosen_on": {
                    "split": "val",
                    "films": len(val_distances),
                    "refused": int(refused.sum()),
                    "turned_caught": {
                        name: round(float(hits.mean()), 4) for name, hits in caught.items()
                    },
                },
            }
        for name in weak:
            log.info(
                "no %s check: the guard would catch %.0f%% of the val films so turned "
                "(at least %.0f%% wanted)",
                name,
                100 * caught[name].mean(),
                100 * MIN_TURNED_CAUGHT,
            )
            del backs[name]
    return None


def _margin(backs: dict, cutoff: float, val_distances: np.ndarray, within: np.ndarray):
    """The smallest margin (in MARGIN_STEPs) at which the turns' check refuses at most
    ORIENTATION_FALSE_REFUSALS of the val films as they came, and those it refuses."""
    margin = 0.0
    while True:
        refused = np.zeros(len(val_distances), dtype=bool)
        for back in backs.values():
            refused |= (back <= cutoff) & (back < val_distances - margin)
        refused &= within
        if refused.sum() <= ORIENTATION_FALSE_REFUSALS * len(val_distances):
            return margin, refused
        margin += MARGIN_STEP


def _full(centred: np.ndarray) -> dict:
    """The scope/1 fields: the Ledoit-Wolf covariance's whitening matrix."""
    covariance, shrinkage = ledoit_wolf(centred)
    # precision = L L^T (Cholesky); W = L^T gives |W x|^2 = x^T precision x.
    whitening = np.linalg.cholesky(np.linalg.inv(covariance)).T
    return {
        "schema": SCOPE_SCHEMA,
        "method": "Mahalanobis distance of the pooled features from the train films' mean, "
        "Ledoit-Wolf shrinkage covariance; distance = |whitening @ (features - mean)|",
        "whitening": _rounded(whitening),
        "shrinkage": float(f"{shrinkage:.{DIGITS}g}"),
    }


def _subspace(centred: np.ndarray, components: int) -> dict:
    """The scope/2 fields: the leading directions scaled to unit variance, their
    variances, and the residual variance."""
    directions, variances, residual = principal_subspace(centred, components)
    return {
        "schema": SUBSPACE_SCHEMA,
        "method": f"Mahalanobis distance of the pooled features from the train films' mean, "
        f"covariance of the {components} leading principal components and one variance for "
        "every other direction; z = whitening @ (features - mean), distance^2 = |z|^2 + "
        "(|features - mean|^2 - sum(component_variances * z^2)) / residual_variance",
        "whitening": _rounded(directions / np.sqrt(variances)[:, None]),
        "component_variances": _rounded(variances),
        "residual_variance": float(f"{residual:.{DIGITS}g}"),
    }


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
    """Each film resized to the model input, 8-bit (small: 16 KB a film at 128 px), from
    the decode cache training filled (the same bytes as
    `edge_runtime.preprocess.resized_grayscale`)."""
    return [decode_cache.resized_grayscale(path, input_spec) for path in paths]


def attach(
    model_path: Path,
    train_grays: list[np.ndarray],
    val_grays: list[np.ndarray],
    *,
    train_counts: dict | None = None,
    val_counts: dict | None = None,
    coverage: float = COVERAGE,
    components: int | None = None,
) -> dict:
    """Fit the scope block for a model with a features output and write it into its
    sidecar, inside the model and in the readable copy (atomically); the model's
    flatbuffer, and so its identity, keeps every byte. components: as `fit`.

    Returns:
        The scope block.
    """
    classifier = Classifier(model_path, check_scope=False)
    output = classifier.feature_output()
    if output is None:
        raise EdgexrayError(f"{model_path} has no pooled-features output (second output)")
    turned = {
        turn.name: features_of(classifier, (turn.apply(gray) for gray in val_grays))
        for turn in TURNS
    }
    block = fit(
        features_of(classifier, train_grays),
        features_of(classifier, val_grays),
        output,
        coverage=coverage,
        train_counts=train_counts,
        val_counts=val_counts,
        components=components,
        turned_val_features=turned,
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
