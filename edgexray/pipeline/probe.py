"""A linear probe: the classifier head fitted on a frozen network's features.

A pretrained backbone's fine-tune starts from this head, not a random one, so its first
steps do not push large random-head gradients into the pretrained blocks. On the frozen
EfficientNet-Lite0 features such a head alone reaches val AUC 0.996
(benchmarks/README.md, "EfficientNet-Lite0 from ImageNet").
"""

from __future__ import annotations

import math

import numpy as np

from edgexray.pipeline import data, progress


def logistic(features: np.ndarray, labels: np.ndarray, strength: float, smoothing: float = 0.0):
    """Weights (the last one the bias) minimising the mean cross-entropy against labels
    smoothed towards 0.5 by `smoothing`, plus strength / 2 * |w|^2 (the bias unpenalised)."""
    from scipy.optimize import minimize

    design = np.hstack([features, np.ones((len(features), 1))])
    targets = labels * (1 - smoothing) + 0.5 * smoothing

    def loss(weights):
        scores = design @ weights
        value = np.mean(np.logaddexp(0, scores) - targets * scores)
        gradient = design.T @ (1 / (1 + np.exp(-scores)) - targets) / len(scores)
        value += 0.5 * strength * weights[:-1] @ weights[:-1]
        gradient[:-1] += strength * weights[:-1]
        return value, gradient

    start = np.zeros(design.shape[1])
    return minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 3000}).x


def linear_head(
    features: np.ndarray, labels: np.ndarray, strength: float, smoothing: float = 0.0
) -> tuple[np.ndarray, float]:
    """The regression fitted on standardised features (so one strength suits every
    feature's scale), folded back onto the raw features: (kernel, bias) of a Dense(1)."""
    features = features.astype(np.float64)
    mean, spread = features.mean(0), features.std(0) + 1e-6
    weights = logistic((features - mean) / spread, labels.astype(np.float64), strength, smoothing)
    kernel = weights[:-1] / spread
    return kernel, float(weights[-1] - kernel @ mean)


def features_of(model, paths: list[str], input_spec: dict, batch_size: int = 64) -> np.ndarray:
    """What the model's last layer reads, for each film (decoded without augmentation)."""
    from edgexray.compat import keras

    extractor = keras.Model(model.inputs, model.layers[-1].input)
    dataset = data.make_dataset(paths, np.zeros(len(paths)), input_spec, batch_size)
    rows = []
    with progress.task("probe features", math.ceil(len(paths) / batch_size), "batches") as bar:
        for images, _ in dataset:
            rows.append(np.asarray(extractor(images, training=False)))
            bar.advance()
    return np.concatenate(rows)


def fit_head(model, paths: list[str], labels: np.ndarray, input_spec: dict, strength: float):
    """Set the model's last Dense(1) layer, in place, to the linear probe of the films."""
    kernel, bias = linear_head(features_of(model, paths, input_spec), labels, strength)
    model.layers[-1].set_weights(
        [kernel.reshape(-1, 1).astype(np.float32), np.array([bias], np.float32)]
    )
