"""The shipped model in edgexray/models/ is whole, small and runs as its sidecar says."""

import numpy as np
import pytest
from conftest import SHARED_TRAIN
from PIL import Image

from edgexray.edge_runtime import REFERENCE_MODEL, metadata
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.interpreter import input_batch, run_interpreter
from edgexray.edge_runtime.preprocess import preprocess


def test_reference_model_matches_its_sidecar_and_fits_the_size_budget():
    classifier = Classifier(REFERENCE_MODEL)  # checks the sha256 against the sidecar
    # The budget is the model's: its flatbuffer (graph and TFLite metadata). The sidecar
    # inside it, 85 KB of them the scope statistics as text, comes on top.
    assert metadata.read(REFERENCE_MODEL).flatbuffer_size <= 300 * 1024
    sidecar = classifier.sidecar
    assert sidecar["model_file"] == REFERENCE_MODEL.name
    assert sidecar["input"]["dtype"] == sidecar["output"]["dtype"] == "uint8"
    assert 0.0 < sidecar["threshold"] < 1.0 and sidecar["target_recall"] >= 0.97
    details = classifier.interpreter.get_input_details()[0]
    assert details["quantization"][0] == pytest.approx(sidecar["input"]["quantization"]["scale"])


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="shared data not present")
def test_reference_model_separates_real_films():
    classifier = Classifier(REFERENCE_MODEL)
    normal = sorted((SHARED_TRAIN / "NORMAL").iterdir())[:5]
    pneumonia = sorted((SHARED_TRAIN / "PNEUMONIA").iterdir())[:5]
    normal_scores = np.array([classifier.probability(p) for p in normal])
    pneumonia_scores = np.array([classifier.probability(p) for p in pneumonia])
    assert normal_scores.mean() < pneumonia_scores.mean()


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="shared data not present")
def test_uint8_fast_path_feeds_the_general_paths_bytes_and_gives_its_probabilities(tmp_path):
    classifier = Classifier(REFERENCE_MODEL)
    assert classifier.levels_are_input  # the shipped full-int8 model takes the fast path
    spec = classifier.sidecar["input"]
    films = sorted((SHARED_TRAIN / "NORMAL").iterdir())[:10]
    films += sorted((SHARED_TRAIN / "PNEUMONIA").iterdir())[:10]
    for i, size in enumerate([(1000, 1400), (301, 517), (97, 60)]):  # other sizes than 224
        films.append(tmp_path / f"{i}.png")
        Image.open(films[i]).resize(size).save(films[-1])
    for film in films:
        general = input_batch(preprocess(film, spec), classifier.input_detail)
        fast = classifier.model_input(film)
        assert fast.dtype == general.dtype == np.uint8 and fast.shape == general.shape
        assert fast.tobytes() == general.tobytes(), film
        slow = run_interpreter(
            classifier.interpreter, preprocess(film, spec), classifier.output_kind
        )
        assert classifier.probability(film) == slow, film
