"""The classifier as a Python API: a film given as a path, an array, a PIL image or a
pydicom Dataset gets the record its file gets."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_TEST
from PIL import Image

import edgexray
from edgexray.edge_runtime import REFERENCE_MODEL

FILM = SHARED_TEST / "PNEUMONIA" / "person101_bacteria_483.jpeg"
ANSWER = ("probability", "label", "in_scope", "scope_reason", "scope_distance")


@pytest.fixture(scope="module")
def classifier():
    return edgexray.Classifier()  # the shipped model when none is named


def answer(record: dict) -> dict:
    return {key: record.get(key) for key in ANSWER}


@pytest.mark.skipif(not FILM.is_file(), reason="needs ../shared/data")
def test_a_film_held_in_memory_gets_the_answer_of_its_file(classifier, tmp_path):
    from dicom_support import secondary_capture

    from_file = classifier.classify(FILM)
    assert classifier.model_path == REFERENCE_MODEL
    with Image.open(FILM) as image:
        assert answer(classifier.classify(image)) == answer(from_file)
        pixels = np.asarray(image)
    assert answer(classifier.classify(pixels, name="ward film")) == answer(from_file)
    assert classifier.classify(pixels, name="ward film")["path"] == "ward film"
    grey = np.asarray(Image.open(FILM).convert("L"))
    dataset = secondary_capture(grey)
    dataset.save_as(tmp_path / "film.dcm", enforce_file_format=True)
    assert answer(classifier.classify(dataset)) == answer(
        classifier.classify(tmp_path / "film.dcm")
    )


def test_what_no_reader_knows_is_an_error_record_not_an_exception(classifier):
    floats = classifier.classify(np.zeros((64, 64), np.float32))
    assert (
        floats["path"] == "array" and "float32 of shape (64, 64) is not a film" in floats["error"]
    )
    nothing = classifier.classify(object(), name="x")
    assert "not a film (give a path, a numpy array" in nothing["error"]
