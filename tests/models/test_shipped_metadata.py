"""The shipped model carries its metadata, and gives the outputs it gave before it did
(tests/models/shipped_outputs_before_metadata.json; all 312 test/ films in
benchmarks/README.md, "The model file carries its metadata")."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgexray.edge_runtime import REFERENCE_MODEL, metadata
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.export.metadata import read_model_metadata

BEFORE = Path(__file__).parent / "shipped_outputs_before_metadata.json"
SHARED_TEST = Path(__file__).resolve().parents[2].parent / "shared/data/chest_xray/test"


def test_the_shipped_model_carries_its_metadata_and_its_copy_agrees():
    parts = metadata.read(REFERENCE_MODEL)
    assert set(parts.files) == {"labels.txt", "edgexray.json"}
    sidecar = load_sidecar(REFERENCE_MODEL)
    assert json.loads(REFERENCE_MODEL.with_suffix(".json").read_text()) == sidecar
    assert sidecar["scope"] is not None and sidecar["model_file"] == REFERENCE_MODEL.name
    assert read_model_metadata(REFERENCE_MODEL.read_bytes())["name"].endswith("(int8)")


@pytest.mark.skipif(not SHARED_TEST.is_dir(), reason="shared data not present")
def test_the_shipped_model_gives_the_outputs_it_gave_before_its_metadata():
    before = json.loads(BEFORE.read_text())
    assert before["model_sha256"] != load_sidecar(REFERENCE_MODEL)["sha256"]  # another file
    classifier = Classifier(REFERENCE_MODEL)
    for name, expected in before["films"].items():
        classifier.run(classifier.model_input(SHARED_TEST / name))
        logit, features = (
            classifier.interpreter.get_tensor(o["index"]).tobytes() for o in classifier.outputs
        )
        assert logit[0] == expected["logit_uint8"], name
        assert hashlib.sha256(features).hexdigest() == expected["features_sha256"], name
