"""`edgexray prune` (pipeline/prune.py): sparsity in the stripped weights, the baseline kept."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.cli import app
from edgexray.errors import EdgexrayError
from edgexray.pipeline.prune import (
    PRUNE_REPORT,
    PruneConfig,
    clone_fresh,
    measure_sparsity,
    prune,
    pruning_schedule,
)

SPARSITY = 0.5
SMALL = 1000  # kernel weights: the tiny model's conv1_1 (36), conv2_1 (288) and logit (32)


@pytest.fixture(scope="module")
def pruned_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run, pruned; returns (run_dir, baseline sha256 before pruning)."""
    run_dir = tmp_path_factory.mktemp("prune") / "pruned run"
    shutil.copytree(tiny_run, run_dir)
    before = artifacts.sha256(run_dir / artifacts.MODEL)
    prune(run_dir, PruneConfig(sparsity=SPARSITY, epochs=1, min_layer_weights=SMALL), verbose=0)
    return run_dir, before


def _tiny_pruning_model(total_steps: int):
    from edgexray.compat import import_tfmot

    tfmot = import_tfmot()

    from edgexray.pipeline.model import build_model

    baseline = build_model(image_size=32, width=4, seed=3)
    schedule = pruning_schedule(SPARSITY, total_steps)
    pruned = clone_fresh(
        baseline,
        lambda layer: tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule),
    )
    return baseline, pruned


def test_pruned_model_reaches_requested_sparsity_in_stripped_weights(pruned_run):
    run_dir, _ = pruned_run
    model = artifacts.load_keras(run_dir / artifacts.PRUNED)
    sparsity = measure_sparsity(model)
    sizes = {name: model.get_layer(name).kernel.shape.num_elements() for name in sparsity["layers"]}
    small = {name for name, size in sizes.items() if size < SMALL}
    assert small == {"conv1_1", "conv2_1", "pneumonia_logit"}
    assert all(sparsity["layers"][name] == 0 for name in small)  # left dense
    assert all(abs(sparsity["layers"][name] - SPARSITY) <= 0.02 for name in sizes.keys() - small)
    # The overall figure counts the dense small layers too.
    pruned_share = sum(sizes[name] for name in sizes.keys() - small) / sum(sizes.values())
    assert abs(sparsity["overall"] - SPARSITY * pruned_share) <= 0.02
    report = json.loads((run_dir / PRUNE_REPORT).read_text())
    assert report["sparsity"] == sparsity
    assert report["config"]["sparsity"] == SPARSITY
    assert 0.0 <= report["val"]["auc"] <= 1.0


def test_baseline_model_is_byte_identical_after_prune(pruned_run):
    run_dir, before = pruned_run
    assert artifacts.sha256(run_dir / artifacts.MODEL) == before


def test_pruned_clone_does_not_share_weights_with_baseline():
    baseline, pruned = _tiny_pruning_model(total_steps=2)
    baseline_ids = {id(v) for v in baseline.weights}
    assert not any(id(v) in baseline_ids for v in pruned.weights)
    # Same starting values, so pruning starts from the trained model...
    images = np.random.default_rng(0).random((4, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(
        baseline.predict(images, verbose=0), pruned.predict(images, verbose=0)
    )
    # ...but zeroing the copy leaves the baseline as it was.
    kernel_before = baseline.get_layer("conv1_1").kernel.numpy().copy()
    for layer in pruned.layers:
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    np.testing.assert_array_equal(baseline.get_layer("conv1_1").kernel.numpy(), kernel_before)


def test_strip_pruning_keeps_predictions():
    from edgexray.compat import import_tfmot

    tfmot = import_tfmot()

    rng = np.random.default_rng(1)
    images = rng.random((16, 32, 32, 1), dtype=np.float32)
    labels = (np.arange(16) % 2).astype(np.float32)
    _, pruned = _tiny_pruning_model(total_steps=4)
    pruned.compile(optimizer="adam", loss="binary_crossentropy")
    pruned.fit(
        images,
        labels,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
    )
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    np.testing.assert_allclose(
        pruned.predict(images, verbose=0), stripped.predict(images, verbose=0), atol=1e-6
    )
    assert abs(measure_sparsity(stripped)["overall"] - SPARSITY) <= 0.02


def test_prune_config_rejects_sparsity_out_of_range():
    with pytest.raises(EdgexrayError, match="sparsity"):
        PruneConfig(sparsity=1.0)


def test_prune_cli_without_trained_model_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["prune", str(tmp_path)])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "edgexray train" in errors[0]
    assert "Traceback" not in result.output


def test_batch_norm_recalibration_replaces_stale_statistics(tiny_run, tiny_config):
    from edgexray.compat import keras
    from edgexray.pipeline import data, finetune

    model = artifacts.load_keras(tiny_run / artifacts.MODEL)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    paths, labels = data.run_split(tiny_run, "train")

    def recalibrated_from(shift: float, films: int) -> list[np.ndarray]:
        for layer in norms:  # statistics a short fine-tune could leave: far from the data
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, shift, np.float32))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 1e-4, np.float32))
        finetune.recalibrate_batch_norm(model, paths, labels, tiny_config, films=films)
        return [layer.moving_mean.numpy().copy() for layer in norms]

    assert all(np.all(mean == 50.0) for mean in recalibrated_from(50.0, films=0))
    first, second = recalibrated_from(50.0, films=64), recalibrated_from(-50.0, films=64)
    # The plain average of the same films, whatever the statistics were before.
    for one, other in zip(first, second, strict=True):
        np.testing.assert_allclose(one, other, rtol=1e-5, atol=1e-5)
        assert np.all(np.abs(one) < 40)
    assert all(layer.momentum == 0.99 for layer in norms)


def test_a_run_trained_with_mixup_prunes_with_distillation(tiny_run, tmp_path):
    # Distillation is the default; its targets are the teacher's answers, so the fine-tune
    # does not blend films (it raised "distillation and mixup cannot be combined").
    run_dir = tmp_path / "mixup run"
    shutil.copytree(tiny_run, run_dir)
    config = json.loads((run_dir / artifacts.CONFIG).read_text())
    (run_dir / artifacts.CONFIG).write_text(json.dumps({**config, "mixup": 0.2}))
    report = prune(run_dir, PruneConfig(epochs=0.5, recalibrate_films=0), verbose=0)
    assert report["config"]["distill"] is True
    assert (run_dir / artifacts.PRUNED).is_file()
