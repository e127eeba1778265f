"""Clinical metrics against hand-computed and independently known values.

Reference values were checked with scipy.stats (binomtest, its Wilson proportion_ci,
mannwhitneyu) when the tests were written, against edgexray's own formulas; metrics.py
now calls scipy.stats for the binomial ones, and the same values must still come out.
"""

import math

import numpy as np
import pytest

from edgexray.pipeline import metrics
from edgexray.pipeline.evaluate import summarize

Z95 = 1.959963984540054

# Ten films at threshold 0.5 (>= counts as pneumonia):
#   pneumonia 0.9 0.8 0.6 0.5 -> found (tp 4), 0.3 -> missed (fn 1)
#   normal    0.7 0.5 -> false alarms (fp 2), 0.4 0.2 0.1 -> normal (tn 3)
LABELS = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
PROBABILITIES = [0.9, 0.8, 0.6, 0.5, 0.3, 0.7, 0.4, 0.2, 0.1, 0.5]


def test_report_matches_hand_computed_confusion_matrix():
    report = metrics.classification_report(LABELS, PROBABILITIES, 0.5)
    assert report["confusion_matrix"] == [[3, 2], [1, 4]]
    assert report["n"] == 10
    assert report["recall"] == pytest.approx(4 / 5)
    assert report["specificity"] == pytest.approx(3 / 5)
    assert report["precision"] == pytest.approx(4 / 6)
    assert report["accuracy"] == pytest.approx(7 / 10)
    assert report["f1"] == pytest.approx(8 / 11)
    # 25 pneumonia/normal pairs: 19 ranked right and one tie (0.5 vs 0.5) counting half.
    assert report["auc"] == pytest.approx(19.5 / 25)
    assert report["recall_ci95"] == pytest.approx([0.375535, 0.963776], abs=1e-6)


def test_summarize_adds_class_counts_to_the_report():
    summary = summarize(LABELS, PROBABILITIES, 0.5)
    assert summary["pneumonia"] == 5 and summary["normal"] == 5
    assert summary["confusion_matrix"] == [[3, 2], [1, 4]]


def test_a_probability_equal_to_the_threshold_counts_as_pneumonia():
    report = metrics.classification_report([1, 0], [0.25, 0.2], 0.25)
    assert report["confusion_matrix"] == [[1, 0], [0, 1]]


def test_auc_counts_ties_as_half():
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9]) == pytest.approx(3.5 / 4)
    assert metrics.roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert metrics.roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)


def test_auc_is_undefined_without_both_classes():
    assert math.isnan(metrics.roc_auc([1, 1], [0.2, 0.8]))


@pytest.mark.parametrize(
    ("successes", "total", "expected"),
    [
        (8, 10, (0.490162, 0.943318)),
        (0, 10, (0.0, 0.277533)),
        (380, 390, (0.953450, 0.986014)),
    ],
)
def test_wilson_interval_matches_known_values(successes, total, expected):
    assert metrics.wilson_interval(successes, total) == pytest.approx(expected, abs=1e-6)


def test_wilson_bounds_are_where_the_score_test_reaches_z():
    # The Wilson interval is the set of p the score test does not reject: at each bound,
    # |p_hat - p| / sqrt(p (1 - p) / n) equals z. An independent check of the formula.
    successes, total = 8, 10
    p_hat = successes / total
    for bound in metrics.wilson_interval(successes, total):
        score = abs(p_hat - bound) / math.sqrt(bound * (1 - bound) / total)
        assert score == pytest.approx(Z95, rel=1e-9)


def test_wilson_interval_is_undefined_for_no_cases():
    assert all(math.isnan(v) for v in metrics.wilson_interval(0, 0))


@pytest.mark.parametrize(
    ("only_first", "only_second", "p_value"),
    [
        (1, 6, 0.125),  # 2 * (1 + 7) / 2**7
        (6, 1, 0.125),
        (0, 5, 0.0625),  # 2 / 2**5
        (2, 10, 79 / 2048),  # 2 * (1 + 12 + 66) / 2**12
        (3, 3, 1.0),
        (0, 0, 1.0),
    ],
)
def test_mcnemar_exact_matches_binomial_test(only_first, only_second, p_value):
    assert metrics.mcnemar_exact(only_first, only_second) == pytest.approx(p_value, rel=1e-12)


def test_expected_calibration_error_weights_bin_gaps_by_size():
    # Bin 0.1-0.2: mean 0.15 vs rate 0.5 (gap 0.35); bin 0.9-1.0: 0.95 vs 1.0 (gap 0.05).
    ece = metrics.expected_calibration_error([0, 1, 1, 1], [0.15, 0.15, 0.95, 0.95])
    assert ece == pytest.approx(0.5 * 0.35 + 0.5 * 0.05)


def test_threshold_for_recall_is_the_highest_reaching_the_target():
    labels = np.array([1, 1, 1, 1, 1, 0, 0])
    probabilities = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.1])
    assert metrics.threshold_for_recall(labels, probabilities, 0.8) == pytest.approx(0.6)
    assert metrics.threshold_for_recall(labels, probabilities, 0.5) == pytest.approx(0.7)
    assert metrics.threshold_for_recall(labels, probabilities, 1.0) == pytest.approx(0.2)
    threshold = metrics.threshold_for_recall(labels, probabilities, 0.79)
    assert metrics.classification_report(labels, probabilities, threshold)["recall"] >= 0.79


def test_threshold_for_recall_flags_extra_films_as_far_as_there_are_any():
    labels = np.array([1, 1, 1, 1, 1, 0, 0])
    probabilities = np.array([0.9, 0.8, 0.7, 0.6, 0.2, 0.65, 0.1])
    assert metrics.threshold_for_recall(labels, probabilities, 0.5, extra_films=1) == 0.6
    assert metrics.threshold_for_recall(labels, probabilities, 0.5, extra_films=2) == 0.2
    assert metrics.threshold_for_recall(labels, probabilities, 0.8, extra_films=9) == 0.2


def test_threshold_for_recall_needs_pneumonia_cases():
    with pytest.raises(ValueError):
        metrics.threshold_for_recall([0, 0], [0.1, 0.2], 0.9)


def test_fit_temperature_recovers_the_temperature_that_made_the_probabilities():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0.0, 3.0, 4000)
    labels = (rng.random(4000) < 1.0 / (1.0 + np.exp(-true_logits))).astype(int)
    # A model that is overconfident by a factor 2 emits 2x the true logit.
    assert metrics.fit_temperature(labels, 2.0 * true_logits) == pytest.approx(2.0, rel=0.1)


def test_logit_and_sigmoid_are_inverse_and_finite_at_the_ends():
    logits = np.array([-20.0, -2.0, 0.0, 3.0, 20.0])
    assert np.allclose(metrics.logit(metrics.sigmoid(logits)), logits, atol=1e-4)
    # Saturated probabilities are clipped, so a temperature fit never sees infinities.
    assert np.isfinite(metrics.logit([0.0, 1.0])).all()


def test_refusing_films_never_improves_recall_or_specificity():
    from edgexray.pipeline import metrics

    labels = np.array([1, 1, 1, 0, 0, 0])
    probabilities = np.array([0.9, 0.8, 0.1, 0.7, 0.2, 0.1])
    plain = metrics.classification_report(labels, probabilities, 0.5)
    refused = np.array([True, False, True, True, False, False])  # a found pneumonia, an FP
    judged = metrics.classification_report(labels, probabilities, 0.5, refused)
    assert judged["recall"] == 1 / 3 < plain["recall"] == 2 / 3  # refused = not found
    assert judged["specificity"] == plain["specificity"]  # the refused FP still counts
    assert judged["auc"] == plain["auc"]
