"""Result shapes written down once, and how people read them (formatting, tables)."""

from __future__ import annotations

import numpy as np

from edgexray.export.quantize import table_lines, variant_table
from edgexray.formatting import estimate, format_table
from edgexray.pipeline import evaluate, metrics, verify


def test_classification_report_has_exactly_its_written_shape():
    report = metrics.classification_report([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.9], 0.5)
    assert set(report) == set(metrics.ClassificationReport.__annotations__)
    summary = evaluate.summarize([0, 0, 1, 1], [0.1, 0.7, 0.6, 0.9], 0.5)
    assert set(summary) == set(evaluate.ClinicalSummary.__annotations__)


def test_a_candidates_comparison_has_its_written_shape():
    labels = np.array([0, 0, 1, 1])
    baseline = {"probabilities": np.array([0.1, 0.7, 0.6, 0.9]), "threshold": 0.5}
    candidate = {"probabilities": np.array([0.1, 0.2, 0.4, 0.9]), "threshold": 0.5}
    for entry in (baseline, candidate):
        entry["report"] = evaluate.summarize(labels, entry["probabilities"], 0.5)
        entry["called"] = np.where(entry["probabilities"] >= 0.5, "PNEUMONIA", "NORMAL")
        entry["refused"] = None
    compared = verify.compare(labels, list("abcd"), baseline, candidate, verify.GateLimits())
    model = {"model": "m.tflite", "name": "m", "kind": "tflite"} | candidate["report"]
    assert set(model | compared) == set(verify.Candidate.__annotations__)


def test_an_undefined_rate_and_interval_read_n_a():
    assert estimate(0.975, [0.912, 0.993]) == "0.9750 [0.912-0.993]"
    assert estimate(0.975, [0.912, 0.993], prose=True) == "0.9750 (0.912–0.993)"
    assert estimate(None, [None, None]) == "n/a"
    assert estimate(None, [None, None], prose=True) == "n/a (n/a)"


def test_cli_and_report_write_the_same_variant_rows():
    variant = {
        "method": "int8",
        "size_bytes": 2048,
        "gzip_bytes": 1024,
        "sparsity": 0.0,
        "threshold": 0.5,
        "val": {"recall": 0.97, "specificity": None},
    }
    text = table_lines([variant])
    markdown = format_table(*variant_table([variant]), markdown=True).splitlines()
    assert text[1].split() == ["int8", "2.0", "1.0", "0.000", "0.5000", "0.9700", "n/a"]
    assert markdown[2] == "| int8 | 2.0 | 1.0 | 0.000 | 0.5000 | 0.9700 | n/a |"
