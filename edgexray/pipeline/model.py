"""A compact CNN for 2 CPU cores and the edge.

Only layers that tensorflow-model-optimization can prune and quantize-annotate:
Conv2D, BatchNormalization, ReLU, MaxPooling2D, GlobalAveragePooling2D, Dropout and
Dense. Normalisation is not in the graph: the model takes the already normalised image
(see edgexray.edge_runtime.preprocess.normalize), so nothing here needs a preprocessing layer.
"""

from __future__ import annotations

# Filters per stage as multiples of `width`, and 3x3 convolutions per stage. At 128 px
# and width 12 this is 243k parameters (about 250 KB as int8); measured against wider and
# shallower variants.
STAGES = ((1, 1), (2, 1), (4, 2), (8, 2), (8, 1))
# How the first stage halves the resolution. "pooled": its convolution at full resolution,
# then the 2x2 max-pool, as every later stage. "strided": the convolution itself steps by 2
# and no pool follows: the same output size for a quarter of the first stage's work, which
# at full resolution was the slowest part of a training step on 2 CPU cores (a batch norm
# over 12 channels at 128 px has no fast oneDNN kernel; benchmarks/README.md, "Speed").
STEMS = {"pooled": 1, "strided": 2}  # the first convolution's stride


def build_model(
    image_size: int = 128,
    width: int = 12,
    dropout: float = 0.2,
    seed: int = 0,
    stem: str = "pooled",
):
    """Five conv stages, each halving the resolution (a 2x2 max-pool, or the stride of a
    "strided" stem's first convolution).

    Args:
        image_size: height and width of the square grayscale input.
        width: filters of the first stage; the parameter count grows with its square.
        dropout: dropout rate before the classifier.
        seed: seeds the weight initialisers, so a build is reproducible.
        stem: a STEMS name.

    Returns:
        An uncompiled tf_keras Model mapping (image_size, image_size, 1) floats in [0, 1]
        to the logit of pneumonia (the probability is its sigmoid, taken on the host).
    """
    from edgexray.compat import keras

    layers = keras.layers
    initializer = keras.initializers.HeNormal

    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = inputs
    first_stride = STEMS[stem]
    for stage, (multiple, convs) in enumerate(STAGES):
        for repeat in range(convs):
            x = layers.Conv2D(
                width * multiple,
                3,
                strides=first_stride if stage == repeat == 0 else 1,
                padding="same",
                use_bias=False,
                kernel_initializer=initializer(seed=seed * 100 + stage * 10 + repeat),
                name=f"conv{stage + 1}_{repeat + 1}",
            )(x)
            x = layers.BatchNormalization(name=f"bn{stage + 1}_{repeat + 1}")(x)
            x = layers.ReLU(name=f"relu{stage + 1}_{repeat + 1}")(x)
        if stage > 0 or first_stride == 1:
            x = layers.MaxPooling2D(2, name=f"pool{stage + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    # The logit, not the probability: a full-int8 model quantizes its output in 256 steps,
    # and on a sigmoid those steps pile the films of a new site into the top one or two
    # (0.996, 1.0), hiding the ranking a site threshold needs. Logit steps are even.
    outputs = layers.Dense(
        1,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name=LOGIT_LAYER,
    )(x)
    return keras.Model(inputs, outputs, name="edgexray_cnn")


LOGIT_LAYER = "pneumonia_logit"


def emits_logit(model) -> bool:
    """True for models whose last layer is linear (edgexray 0.2 on); earlier models end
    in a sigmoid and emit the probability itself."""
    from edgexray.compat import keras

    last = model.layers[-1]
    last = getattr(last, "layer", last)  # tfmot's prune and quantize wrappers hold the layer
    return getattr(last, "activation", None) is keras.activations.linear


def fold_temperature(model, temperature: float) -> None:
    """Divide the model's logit by `temperature` in place, by scaling the last Dense layer,
    so every later stage and every exported variant inherits the calibration."""
    layer = model.layers[-1]
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel / temperature, bias / temperature])
