"""The shipped model in edgexray/models/ is whole, small and runs as its sidecar says."""

import numpy as np
import pytest
from conftest import SHARED_TRAIN

from edgexray.edge_runtime import REFERENCE_MODEL, infer


def test_reference_model_matches_its_sidecar_and_fits_the_size_budget():
    classifier = infer.Classifier(REFERENCE_MODEL)  # checks the sha256 against the sidecar
    assert REFERENCE_MODEL.stat().st_size <= 300 * 1024
    sidecar = classifier.sidecar
    assert sidecar["model_file"] == REFERENCE_MODEL.name
    assert sidecar["input"]["dtype"] == sidecar["output"]["dtype"] == "uint8"
    assert 0.0 < sidecar["threshold"] < 1.0 and sidecar["target_recall"] >= 0.97
    details = classifier.interpreter.get_input_details()[0]
    assert details["quantization"][0] == pytest.approx(sidecar["input"]["quantization"]["scale"])


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="shared data not present")
def test_reference_model_separates_real_films():
    classifier = infer.Classifier(REFERENCE_MODEL)
    normal = sorted((SHARED_TRAIN / "NORMAL").iterdir())[:5]
    pneumonia = sorted((SHARED_TRAIN / "PNEUMONIA").iterdir())[:5]
    normal_scores = np.array([classifier.probability(p) for p in normal])
    pneumonia_scores = np.array([classifier.probability(p) for p in pneumonia])
    assert normal_scores.mean() < pneumonia_scores.mean()
