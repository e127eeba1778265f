"""One scoring path: the numbers a threshold is chosen on are the numbers it is gated on."""

from pathlib import Path

import numpy as np
import pytest

from edgexray import artifacts
from edgexray.errors import EdgexrayError
from edgexray.export import convert
from edgexray.pipeline import data, evaluate, scoring


def _val_paths(run_dir: Path, config) -> list[str]:
    samples = data.load_manifest(run_dir / artifacts.MANIFEST)
    return data.select(samples, "val", Path(config.data))[0]


def test_training_and_gate_score_a_keras_model_identically(tiny_run, tiny_config):
    paths = _val_paths(tiny_run, tiny_config)
    model = artifacts.load_keras(tiny_run / artifacts.MODEL)
    chosen_on = scoring.keras_probabilities(model, paths, tiny_config.input_spec)
    gated_on = scoring.score([evaluate.load_model(tiny_run / artifacts.MODEL).scorer], paths)
    gated_on = gated_on.probabilities[0]
    np.testing.assert_array_equal(chosen_on, gated_on)


def test_quantize_and_gate_score_a_tflite_model_identically(tiny_run, tiny_config, tiny_tflite):
    paths = _val_paths(tiny_run, tiny_config)
    images = [scoring.decode(p, tiny_config.input_spec) for p in paths]
    tflite_bytes = tiny_tflite["int8"].read_bytes()
    # As quantize does: the output kind comes from the Keras model the .tflite was made from.
    kind = convert.output_kind(artifacts.load_keras(tiny_run / artifacts.MODEL))
    assert kind == "logit"
    chosen_on = scoring.tflite_scorer(tflite_bytes, tiny_config.input_spec, "int8", kind)
    chosen_on = chosen_on.probabilities(images)
    gated_on = scoring.score([evaluate.load_model(tiny_tflite["int8"]).scorer], paths)
    gated_on = gated_on.probabilities[0]
    np.testing.assert_array_equal(chosen_on, gated_on)


def test_a_split_file_that_became_unreadable_is_an_error(tiny_run, tiny_config, tmp_path):
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"not an image")
    model = artifacts.load_keras(tiny_run / artifacts.MODEL)
    with pytest.raises(EdgexrayError, match="unreadable"):
        scoring.keras_probabilities(model, [str(broken)], tiny_config.input_spec)


def test_scoring_returns_the_readable_set_and_why_the_rest_was_skipped(
    tiny_tflite, xray_folder, tmp_path
):
    films = sorted(str(p) for p in (xray_folder / "PNEUMONIA").glob("*.jpeg"))[:3]
    broken = tmp_path / "broken film.jpeg"
    broken.write_bytes(b"not an image")
    paths = [films[0], str(broken), films[1], str(tmp_path / "gone.jpeg"), films[2]]
    model = evaluate.load_model(tiny_tflite["int8"])
    scores = scoring.score([model.scorer, model.scorer], paths, labels=[1, 0, 1, 0, 1])
    assert scores.paths == films and len(scores) == 3
    assert scores.labels.tolist() == [1, 1, 1]
    assert scores.probabilities.shape == (2, 3) and not np.isnan(scores.probabilities).any()
    assert set(scores.skipped) == {str(broken), str(tmp_path / "gone.jpeg")}
    assert "not a JPEG, PNG or DICOM" in scores.skipped[str(broken)]
