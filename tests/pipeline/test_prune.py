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


@pytest.fixture(scope="module")
def pruned_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run, pruned; returns (run_dir, baseline sha256 before pruning)."""
    run_dir = tmp_path_factory.mktemp("prune") / "pruned run"
    shutil.copytree(tiny_run, run_dir)
    before = artifacts.sha256(run_dir / artifacts.MODEL)
    prune(run_dir, PruneConfig(sparsity=SPARSITY, epochs=1), verbose=0)
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
    sparsity = measure_sparsity(artifacts.load_keras(run_dir / artifacts.PRUNED))
    assert abs(sparsity["overall"] - SPARSITY) <= 0.02
    assert all(abs(value - SPARSITY) <= 0.02 for value in sparsity["layers"].values())
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
