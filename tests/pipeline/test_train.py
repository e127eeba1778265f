"""`edgexray train` (pipeline/train.py): the run folder, the threshold on val, configs."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
from conftest import SHARED_TRAIN

from edgexray import artifacts
from edgexray.errors import EdgexrayError
from edgexray.pipeline import data, metrics, scoring
from edgexray.pipeline.train import TrainConfig, train


def test_run_dir_holds_everything_later_stages_need(tiny_run):
    for name in (artifacts.CONFIG, artifacts.MANIFEST, artifacts.MODEL, artifacts.METRICS):
        assert (tiny_run / name).is_file()
    summary = json.loads((tiny_run / artifacts.METRICS).read_text())
    for split in ("val", "test"):
        for at in ("at_threshold", "at_0.5"):
            assert {"accuracy", "recall", "specificity", "precision", "f1", "auc"} <= set(
                summary[split][at]
            )
    assert "none" in summary["shift_stress_test_val"]


def test_threshold_reaches_target_recall_on_val(tiny_run, tiny_config):
    summary = json.loads((tiny_run / artifacts.METRICS).read_text())
    assert summary["val"]["at_threshold"]["recall"] >= tiny_config.target_recall
    # Recomputed from the saved model, the threshold gives the same recall.
    samples = data.load_manifest(tiny_run / artifacts.MANIFEST)
    paths, labels = data.select(samples, "val", tiny_config.data)
    probabilities = scoring.keras_probabilities(
        artifacts.load_keras(tiny_run / artifacts.MODEL), paths, tiny_config.input_spec
    )
    report = metrics.classification_report(labels, probabilities, summary["threshold"])
    assert report["recall"] == summary["val"]["at_threshold"]["recall"]


def test_same_seed_twice_gives_same_split_and_metrics(tiny_run, tiny_config, tmp_path):
    again = tmp_path / "again"
    summary = train(tiny_config, again, verbose=0)
    assert (again / artifacts.MANIFEST).read_bytes() == (tiny_run / artifacts.MANIFEST).read_bytes()
    first = json.loads((tiny_run / artifacts.METRICS).read_text())
    assert summary["threshold"] == first["threshold"]
    assert summary["test"] == first["test"]


def test_config_rejects_nonsense():
    with pytest.raises(EdgexrayError, match="target_recall"):
        TrainConfig(data="x", target_recall=1.5)


def test_config_file_round_trips(tiny_run, tiny_config):
    loaded = TrainConfig.from_json(tiny_run / artifacts.CONFIG)
    assert loaded == tiny_config


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="shared data not present")
def test_trains_end_to_end_on_a_few_real_images(tmp_path):
    """A handful of real films, copied so nothing is written into ../shared."""
    root = tmp_path / "real data"
    for name in data.LABELS:
        (root / name).mkdir(parents=True)
        for path in sorted((SHARED_TRAIN / name).iterdir())[:24]:
            shutil.copy(path, root / name / path.name)
    config = TrainConfig(
        data=str(root), image_size=32, width=4, epochs=2, val_fraction=0.25, test_fraction=0.25
    )
    summary = train(config, tmp_path / "run", verbose=0)
    assert 0.0 <= summary["threshold"] <= 1.0
    assert summary["split"]["test"]["images"] > 0
    model = artifacts.load_keras(tmp_path / "run" / artifacts.MODEL)
    assert model.input_shape == (None, 32, 32, 1)
    probabilities = scoring.keras_probabilities(
        model, [str(next((root / "NORMAL").iterdir()))], config.input_spec
    )
    assert probabilities.shape == (1,) and np.all((0 <= probabilities) & (probabilities <= 1))
    assert dataclasses.asdict(TrainConfig.from_json(tmp_path / "run" / artifacts.CONFIG))[
        "data"
    ] == str(root)


def test_shift_report_marks_synthetic_shifts_that_move_like_the_real_one():
    from edgexray.pipeline.train import shift_report

    def rates(auc, recall, specificity):
        return {"auc": auc, "recall": recall, "specificity": specificity}

    summary = {
        "val": {"at_threshold": rates(0.99, 0.97, 0.97)},
        "test": {"at_threshold": rates(0.95, 0.99, 0.70)},  # a new site: more false alarms
        "shift_stress_test_val": {
            "none": rates(0.99, 0.97, 0.97),
            "like the site": rates(0.98, 0.98, 0.90),
            "only the threshold": rates(0.99, 0.98, 0.90),
            "the other way": rates(0.99, 0.95, 0.99),
        },
    }
    report = shift_report(summary)
    assert report["real_val_to_test"]["specificity"] == pytest.approx(-0.27)
    alike = {name: r["moves_like_real"] for name, r in report["synthetic"].items()}
    assert alike == {"like the site": True, "only the threshold": False, "the other way": False}


def test_fold_temperature_divides_the_logit():
    import numpy as np

    from edgexray.pipeline.model import build_model, emits_logit, fold_temperature

    model = build_model(image_size=32, width=2, seed=0)
    assert emits_logit(model)
    images = np.random.default_rng(0).random((3, 32, 32, 1)).astype(np.float32)
    before = model(images, training=False).numpy()
    fold_temperature(model, 2.5)
    assert np.allclose(model(images, training=False).numpy(), before / 2.5, atol=1e-6)


def test_weight_average_replaces_the_weights_at_epoch_end(tiny_config):
    from edgexray.compat import keras
    from edgexray.pipeline import finetune
    from edgexray.pipeline.model import build_model

    samples, _ = data.scan(tiny_config.data)
    paths, labels = data.select(samples, "", tiny_config.data)
    model = build_model(tiny_config.image_size, tiny_config.width, seed=1)
    matches = []

    def compare(epoch, logs):  # before fit's own end-of-training swap
        pairs = zip(
            model.trainable_variables, model.optimizer._model_variables_moving_average, strict=True
        )
        matches.append(all(np.array_equal(v.numpy(), a.numpy()) for v, a in pairs))

    finetune.fit(
        model,
        paths,
        labels,
        tiny_config,
        learning_rate=1e-2,
        epochs=2,
        batch_size=16,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=compare)],
        verbose=0,
        weight_average=0.5,
    )
    assert matches == [True, True]  # validation and checkpoints see the average


def test_config_rejects_out_of_range_mixup_and_weight_average():
    with pytest.raises(EdgexrayError, match="mixup"):
        TrainConfig(data="x", mixup=-0.1)
    with pytest.raises(EdgexrayError, match="weight_average"):
        TrainConfig(data="x", weight_average=1.0)
