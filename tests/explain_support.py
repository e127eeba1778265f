"""A tiny full-int8 model driven by one bright patch, and films for it (explain, report)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 32
LESION = (slice(18, 26), slice(5, 13))  # rows, columns of the bright patch


def lesion_film(seed: int = 0, lesion: bool = True) -> np.ndarray:
    """A dark, noisy 32 px film with (or without) one bright lesion-like patch."""
    rng = np.random.default_rng(seed)
    film = np.clip(rng.normal(60, 12, (SIZE, SIZE)), 0, 255)
    if lesion:
        film[LESION] = 220
    return film.astype(np.uint8)


def write_lesion_model(folder: Path) -> Path:
    """A full-int8 .tflite whose logit grows with the bright area of the film.

    Fixed weights, no training: a 3x3 mean filter, a ReLU above mid-grey and a global
    average, so the output is driven by bright pixels wherever they are, and by nothing else.
    """
    from edgexray.compat import keras
    from edgexray.export import convert

    image = keras.Input((SIZE, SIZE, 1), name="image")
    bright = keras.layers.Conv2D(
        1,
        3,
        padding="same",
        kernel_initializer=keras.initializers.Constant(1 / 9),
        bias_initializer=keras.initializers.Constant(-0.5),
    )(image)
    bright = keras.layers.ReLU()(bright)
    pooled = keras.layers.GlobalAveragePooling2D()(bright)
    output = keras.layers.Dense(
        1,
        kernel_initializer=keras.initializers.Constant(40.0),
        bias_initializer=keras.initializers.Constant(-1.0),
    )(pooled)
    model = keras.Model(image, output)
    samples = [
        lesion_film(seed, lesion=seed % 2 == 0).astype(np.float32)[..., None] / 255.0
        for seed in range(16)
    ]
    spec = {
        "height": SIZE,
        "width": SIZE,
        "channels": 1,
        "color": "grayscale",
        "resize": "bilinear, aspect ratio not kept",
        "normalization": "scale",
        "value_range": [0.0, 1.0],
        "layout": "NHWC",
    }
    path = folder / "lesion int8.tflite"
    convert.write_tflite(
        convert.to_full_int8(model, samples),
        path,
        method="int8",
        method_config={},
        input_spec=spec,
        threshold=0.5,
        target_recall=0.97,
        sparsity=0.0,
        output_kind="logit",
    )
    return path


def write_films(folder: Path) -> Path:
    """A folder with a lesion film, a clear film, a blank image and a file that is not one."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(lesion_film(1)).save(folder / "lesion film.png")
    Image.fromarray(lesion_film(2, lesion=False)).save(folder / "clear film.png")
    Image.new("L", (SIZE, SIZE), 128).save(folder / "blank.png")
    (folder / "notes.png").write_text("not an image\n")
    return folder
