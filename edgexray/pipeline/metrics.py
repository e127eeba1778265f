"""Clinical metrics in plain numpy: PNEUMONIA (label 1) is the positive class.

Recall is the pneumonia sensitivity; specificity is the share of normal films called
normal. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from edgexray.edge_runtime.interpreter import sigmoid  # noqa: F401 (the one sigmoid)


def confusion(labels: np.ndarray, predicted: np.ndarray) -> dict[str, int]:
    """Counts of true/false positives/negatives (positive = pneumonia)."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(predicted).astype(bool)
    return {
        "tp": int(np.sum(labels & predicted)),
        "fn": int(np.sum(labels & ~predicted)),
        "tn": int(np.sum(~labels & ~predicted)),
        "fp": int(np.sum(~labels & predicted)),
    }


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney statistic, ties count one half)."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    starts = np.r_[0, np.nonzero(np.diff(sorted_scores))[0] + 1]
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct score threshold."""
    labels = np.asarray(labels).astype(bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    tps = np.r_[0, np.cumsum(labels[order])]
    fps = np.r_[0, np.cumsum(~labels[order])]
    return fps / max(fps[-1], 1), tps / max(tps[-1], 1)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = 10):
    """ECE: the bin-size-weighted gap between mean probability and observed pneumonia rate."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probabilities, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            gap = abs(probabilities[in_bin].mean() - labels[in_bin].mean())
            ece += in_bin.mean() * gap
    return float(ece)


def logit(probabilities) -> np.ndarray:
    """Inverse sigmoid, clipped so that saturated probabilities stay finite."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def fit_temperature(labels, logits) -> float:
    """The temperature T minimising the log-loss of sigmoid(logit / T) (Guo et al. 2017).

    Searched on a fine log-spaced grid from 0.05 to 20: one parameter, so a grid is exact
    enough and deterministic. T only rescales the logit, so the ranking (AUC) and the
    films on either side of any threshold re-chosen after it are unchanged.
    """
    labels = np.asarray(labels).astype(np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    signs = 2.0 * labels - 1.0
    temperatures = np.exp(np.linspace(np.log(0.05), np.log(20.0), 2001))
    losses = [np.mean(np.logaddexp(0.0, -signs * logits / t)) for t in temperatures]
    return float(temperatures[int(np.argmin(losses))])


# SciPy is imported inside the functions: `edgexray --help` imports this module.


def wilson_interval(successes: int, total: int, confidence: float = 0.95):
    """Wilson score interval of a proportion; (nan, nan) when total is 0."""
    from scipy import stats

    if total == 0:
        return (float("nan"), float("nan"))
    ci = stats.binomtest(successes, total).proportion_ci(confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def mcnemar_exact(only_first_correct: int, only_second_correct: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pair counts (binomial, p=0.5)."""
    from scipy import stats

    n = only_first_correct + only_second_correct
    if n == 0:
        return 1.0
    return float(stats.binomtest(min(only_first_correct, only_second_correct), n).pvalue)


def _ratio(numerator: int, denominator: int) -> float | None:
    """A proportion, or None (JSON null) when it is undefined, e.g. precision with no positives."""
    return numerator / denominator if denominator else None


def _defined(value: float) -> float | None:
    return None if value is None or math.isnan(value) else value


class ClassificationReport(TypedDict):
    """classification_report(): every metric at one threshold. None where undefined (no
    film of a class); the 95% intervals are Wilson's, as [low, high]."""

    n: int
    threshold: float
    accuracy: float | None
    recall: float | None
    recall_ci95: list[float | None]
    specificity: float | None
    specificity_ci95: list[float | None]
    precision: float | None
    f1: float | None
    auc: float | None
    ece: float | None
    confusion_matrix: list[list[int]]  # [[tn, fp], [fn, tp]]


def classification_report(
    labels, probabilities, threshold: float, refused=None
) -> ClassificationReport:
    """Every metric at one decision threshold (pneumonia when probability >= threshold).

    Args:
        refused: per film, True when the device refuses it as out of scope (label
            OUT_OF_SCOPE). A refused pneumonia film counts as missed; a refused normal
            film counts by its probability as before. So refusing films can never improve
            recall or specificity: what the device finds unaided (evaluate, calibrate).
            The gate passes no refusals here (it bounds them apart: verify.py). AUC and
            ECE stay on the probabilities of every film.
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    called = probabilities >= threshold
    if refused is not None:
        called = called & ~(np.asarray(refused, dtype=bool) & (labels == 1))
    counts = confusion(labels, called)
    tp, fn, tn, fp = counts["tp"], counts["fn"], counts["tn"], counts["fp"]
    recall = _ratio(tp, tp + fn)
    precision = _ratio(tp, tp + fp)
    return {
        "n": int(len(labels)),
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, len(labels)),
        "recall": recall,
        "recall_ci95": [_defined(v) for v in wilson_interval(tp, tp + fn)],
        "specificity": _ratio(tn, tn + fp),
        "specificity_ci95": [_defined(v) for v in wilson_interval(tn, tn + fp)],
        "precision": precision,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auc": _defined(roc_auc(labels, probabilities)),
        "ece": expected_calibration_error(labels, probabilities),
        # Rows are the true class, columns the predicted class: [[tn, fp], [fn, tp]].
        "confusion_matrix": [[tn, fp], [fn, tp]],
    }


def threshold_for_recall(
    labels, probabilities, target_recall: float, extra_films: int = 0
) -> float:
    """The highest threshold whose pneumonia recall is at least target_recall.

    The highest such threshold gives the best specificity at that recall. Probabilities
    at or above the threshold count as pneumonia. extra_films: flag that many more
    pneumonia films than the target needs (as many as there are, at most).
    """
    labels = np.asarray(labels).astype(bool)
    positives = np.sort(np.asarray(probabilities, dtype=np.float64)[labels])[::-1]
    if len(positives) == 0:
        raise ValueError("no pneumonia cases to choose a threshold on")
    # The k-th highest positive score as threshold flags k positives.
    needed = max(1, math.ceil(target_recall * len(positives) - 1e-9))
    return float(positives[min(needed + extra_films, len(positives)) - 1])


# --- sample sizes and guarantees: exact binomial --------------------------------------------


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k)."""
    from scipy import stats

    return float(stats.binom.cdf(k, n, p))


def misses_allowed(n: int, target_recall: float, confidence: float) -> int | None:
    """The largest k such that the (k+1)-th lowest of n pneumonia scores is a valid threshold.

    Valid: recall >= target_recall with the confidence (the Neyman-Pearson order statistic,
    see pipeline/calibrate.py). None when even k = 0 (the lowest score) cannot support the
    target at the confidence.
    """
    if n == 0:
        return None
    miss_rate, risk = 1.0 - target_recall, 1.0 - confidence
    for k in range(n):
        if binomial_cdf(k, n, miss_rate) > risk:
            return k - 1 if k > 0 else None
    return n - 1


def films_needed(target_recall: float, confidence: float, misses: int = 0) -> int:
    """Pneumonia films needed to show recall >= target at the confidence with `misses` misses.

    E.g. 99 for recall 0.97 at 95% with no miss (0.97**99 <= 0.05 < 0.97**98).
    """
    n = misses + 1
    while binomial_cdf(misses, n, 1.0 - target_recall) > 1.0 - confidence:
        n += 1
    return n


def recall_lower_bound(found: int, total: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower confidence bound of recall: found of total pneumonia."""
    from scipy import stats

    if found <= 0:
        return 0.0
    test = stats.binomtest(found, total, alternative="greater")
    return float(test.proportion_ci(confidence, method="exact").low)


def predictive_values(recall: float, specificity: float, prevalence: float) -> dict:
    """PPV and NPV at a prevalence (Bayes' rule on recall and specificity)."""
    true_pos, false_neg = recall * prevalence, (1.0 - recall) * prevalence
    true_neg, false_pos = specificity * (1.0 - prevalence), (1.0 - specificity) * (1.0 - prevalence)
    ppv = true_pos / (true_pos + false_pos) if true_pos + false_pos > 0 else None
    npv = true_neg / (true_neg + false_neg) if true_neg + false_neg > 0 else None
    return {"ppv": ppv, "npv": npv}
