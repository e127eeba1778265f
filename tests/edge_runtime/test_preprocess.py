"""Image quality (preprocess.py): flat, blank and two-tone images are warned about, films not."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_TRAIN, synthetic_xray
from PIL import Image

from edgexray.edge_runtime import REFERENCE_MODEL, readers
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.preprocess import (
    TWO_TONE_SHARE,
    quality_warning,
    resized_grayscale,
    two_tone_share,
)


def test_flat_or_blank_images_get_a_quality_warning(tiny_tflite, tmp_path):
    Image.new("L", (64, 64), 255).save(tmp_path / "a blank.png")
    Image.new("L", (300, 200), 90).save(tmp_path / "b grey.jpg", quality=90)
    rng = np.random.default_rng(4)
    faint = np.full((64, 64), 120) + rng.integers(0, 3, (64, 64))  # 3 grey levels
    Image.fromarray(faint.astype(np.uint8)).save(tmp_path / "c faint.png")
    synthetic_xray(rng, pneumonia=True).save(tmp_path / "d film.png")
    classifier = Classifier(tiny_tflite["int8"])
    records = [classifier.classify(p) for p in sorted(tmp_path.iterdir())]
    assert ["quality_warning" in r for r in records] == [True, True, True, False]
    assert records[0]["quality_warning"].startswith("flat or blank image")
    assert "probability" in records[0]  # still scored: the warning is added, not instead
    # ... and the film is out of scope: no NORMAL/PNEUMONIA for an image with nothing in it
    assert [r["label"] == "OUT_OF_SCOPE" for r in records] == [True, True, True, False]


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="needs ../shared/data")
def test_real_films_get_no_quality_warning():
    spec = {"height": 128, "width": 128}
    for label in ("NORMAL", "PNEUMONIA"):
        for path in sorted((SHARED_TRAIN / label).iterdir())[:10]:
            assert quality_warning(resized_grayscale(path, spec)) is None, path


def test_a_two_tone_image_gets_a_quality_warning(tmp_path):
    blocks = (np.random.default_rng(0).random((25, 20)) > 0.5).astype(np.uint8) * 255
    Image.fromarray(np.kron(blocks, np.ones((40, 40), np.uint8))).save(tmp_path / "two.png")
    record = Classifier(REFERENCE_MODEL).classify(tmp_path / "two.png")
    assert "two-tone" in record["quality_warning"]
    films = sorted(SHARED_TRAIN.glob("*/*.jpeg"))[:20] if SHARED_TRAIN.is_dir() else []
    for film in films:  # real films stay unflagged
        assert two_tone_share(readers.read(film)[0]) < TWO_TONE_SHARE
