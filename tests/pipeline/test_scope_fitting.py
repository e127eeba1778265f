"""Fitting the scope guard's statistics (pipeline/scope.py): the cut-off and its coverage."""

from __future__ import annotations

import numpy as np

from edgexray.edge_runtime import scope as guard
from edgexray.pipeline import scope as fitting


def test_cutoff_lets_at_least_the_coverage_pass():
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(300, 4)), rng.normal(size=(101, 4))
    output = {"index": 1, "name": "f", "size": 4}
    block = fitting.fit(train, val, output, coverage=0.99)
    distances = np.array([guard.distance(f, block) for f in val])
    assert np.mean(distances <= block["cutoff"]) >= 0.99
    assert np.sum(distances <= block["cutoff"]) == 100  # the smallest such cut-off
    assert guard.distance(train.mean(axis=0) + 10, block) > block["cutoff"]
