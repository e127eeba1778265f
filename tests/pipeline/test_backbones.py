"""`--backbone` (pipeline/backbones/__init__.py): EfficientNet-Lite0 through train, prune
and quantize at 32 px, and the compact CNN's default left as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.cli import app
from edgexray.export.quantize import METHODS, QuantizeConfig, quantize
from edgexray.pipeline.backbones import BACKBONES, efficientnet_lite
from edgexray.pipeline.prune import PruneConfig, measure_sparsity, prune
from edgexray.pipeline.train import TrainConfig, load_config
from edgexray.run import RunConfig

runner = CliRunner()
LITE0 = "efficientnet-lite0"


@pytest.fixture(scope="module")
def lite0_run(xray_folder, tmp_path_factory):
    """A Lite0 run trained by the CLI at 32 px for one epoch; tests must not modify it."""
    folder = tmp_path_factory.mktemp("lite0") / "lite0 run"
    config = folder.parent / "recipe.json"
    config.write_text(json.dumps({"val_fraction": 0.25, "test_fraction": 0.25, "seed": 1}))
    result = runner.invoke(
        app,
        ["train", "--data", str(xray_folder), "--out", str(folder), "--config", str(config)]
        + ["--backbone", LITE0, "--image-size", "32", "--epochs", "1"],
    )
    assert result.exit_code == 0, result.output
    return folder


def test_efficientnet_lite0_trains_only_its_top_blocks(lite0_run):
    config = load_config(lite0_run)
    assert (config.backbone, config.image_size, config.batch_size) == (LITE0, 32, 32)
    assert artifacts.read_json(lite0_run / artifacts.METRICS)["epochs_run"] == 1
    trained = artifacts.load_keras(lite0_run / artifacts.MODEL)
    imagenet = efficientnet_lite.build(32, channels=1, classes=1)
    efficientnet_lite.load_imagenet_weights(imagenet)
    for layer in trained.layers:
        if not layer.weights or layer.name == "logits":
            continue
        imagenet_weights = imagenet.get_layer(layer.name).get_weights()
        same = all(
            np.array_equal(a, b) for a, b in zip(layer.get_weights(), imagenet_weights, strict=True)
        )
        # Frozen layers (blocks 0-10 and every batch norm) keep ImageNet's weights.
        assert same != layer.trainable, layer.name


def test_only_trainable_layers_are_wrapped_for_pruning(lite0_run):
    from edgexray.compat import import_tfmot
    from edgexray.pipeline.prune import clone_fresh, prunable

    wrapper = import_tfmot().sparsity.keras.prune_low_magnitude
    model = artifacts.load_keras(lite0_run / artifacts.MODEL)
    clone = clone_fresh(model, wrapper)
    wrapped = {layer.layer.name for layer in clone.layers if hasattr(layer, "layer")}
    assert wrapped == {layer.name for layer in model.layers if prunable(layer)}
    assert "block11_expand_conv" in wrapped and "logits" in wrapped
    assert not any(layer.name in wrapped for layer in model.layers if not layer.trainable)


@pytest.mark.slow
def test_pruning_cuts_only_the_trainable_layers(lite0_run, tmp_path):
    import shutil

    run_dir = tmp_path / "pruned lite0"
    shutil.copytree(lite0_run, run_dir)
    row = {**BACKBONES[LITE0].run_prune, "epochs": 0.25, "recalibrate_films": 0}
    prune(run_dir, PruneConfig(**row), verbose=0)
    baseline = artifacts.load_keras(run_dir / artifacts.MODEL)
    pruned = artifacts.load_keras(run_dir / artifacts.PRUNED)
    sparsity = measure_sparsity(pruned)
    assert abs(sparsity["overall"] - 0.8) <= 0.02
    cut = set(sparsity["layers"])
    assert "stem_conv" not in cut and "block11_expand_conv" in cut and "logits" in cut
    for layer in pruned.layers:
        if getattr(layer, "kernel", None) is None or layer.name in cut:
            continue
        kernel = layer.kernel.numpy()
        assert np.array_equal(kernel, baseline.get_layer(layer.name).kernel.numpy()), layer.name


def test_sidecar_carries_the_backbones_input_size_and_normalisation(
    lite0_run, xray_folder, tmp_path
):
    import shutil

    from edgexray.edge_runtime.classifier import Classifier

    run_dir = tmp_path / "exported lite0"
    shutil.copytree(lite0_run, run_dir)
    (result,) = quantize(run_dir, ["float32"], QuantizeConfig(), verbose=0)
    spec = result["sidecar"]["input"]
    assert (spec["height"], spec["width"], spec["channels"]) == (32, 32, 1)
    assert spec["normalization"] == "equalize"
    classifier = Classifier(result["path"])
    assert 0.0 <= classifier.probability(next((xray_folder / "NORMAL").iterdir())) <= 1.0


def test_lite0_run_defaults_come_from_its_row():
    config = TrainConfig(data="x", backbone=LITE0)
    assert (config.image_size, config.epochs, config.learning_rate) == (224, 4, 2e-4)
    assert TrainConfig(data="x", backbone=LITE0, image_size=160).image_size == 160
    run = RunConfig(train=config)
    assert run.methods == BACKBONES[LITE0].run_methods and "qat" not in run.methods
    assert run.prune.epochs == BACKBONES[LITE0].run_prune["epochs"]
    assert "backbone" in run.stage_settings()["train"]


def test_compact_default_is_unchanged(tmp_path):
    from edgexray.pipeline.model import build_model

    config = TrainConfig(data=str(tmp_path))
    run = RunConfig(train=config)
    assert config.backbone == "compact" and run.methods == METHODS
    assert run.prune == PruneConfig()
    # The values main had as TrainConfig's defaults; no "backbone" in the hash, so earlier
    # run directories resume.
    settings = run.stage_settings()["train"]
    assert "backbone" not in settings
    assert {k: settings[k] for k in BACKBONES["compact"].recipe} == dict(
        image_size=128, epochs=12, batch_size=128, learning_rate=4e-3, warmup_epochs=1,
        label_smoothing=0.1,
    )  # fmt: skip
    built = BACKBONES["compact"].build(config)
    direct = build_model(128, config.width, config.dropout, config.seed, config.stem)
    for a, b in zip(built.get_weights(), direct.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unknown_backbone_is_one_line_error(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path), "--backbone", "resnet"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "Invalid value for '--backbone'" in result.output
    config = tmp_path / "bad backbone.json"
    config.write_text(json.dumps({"data": str(tmp_path), "backbone": "resnet"}))
    result = runner.invoke(app, ["train", "--config", str(config)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "backbone must be one of" in errors[0]


def test_prune_cli_takes_the_backbones_settings_unless_given(lite0_run, monkeypatch):
    # `edgexray prune` alone pruned a Lite0 run with the compact CNN's recipe (6 passes,
    # distillation) where `edgexray run` used the Lite0 row's.
    from edgexray.pipeline import prune as pruning

    seen = []
    report = {
        "sparsity": {"overall": 0.8, "zeros": 4, "weights": 5, "layers": {}},
        "val": {"auc": 0.9, "threshold": 0.5, "recall": 0.97, "specificity": 0.8},
        "baseline_val_auc": 0.9,
    }
    monkeypatch.setattr(
        pruning, "prune", lambda run_dir, config, verbose: seen.append(config) or report
    )
    for extra in ([], ["--epochs", "2"]):
        result = runner.invoke(app, ["prune", str(lite0_run), *extra])
        assert result.exit_code == 0, result.output
    assert seen[0] == PruneConfig(**BACKBONES[LITE0].run_prune)
    assert seen[1] == PruneConfig(**{**BACKBONES[LITE0].run_prune, "epochs": 2.0})
