"""Augmentation and acquisition shift, on the resized 8-bit image before normalisation.

Training augments films the way another machine or hospital would change them, and the
shift stress test applies fixed versions of the same changes to the validation films.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter


def _affine(
    gray: np.ndarray,
    angle: float,
    zoom: float,
    shift_x: float,
    shift_y: float,
    aspect: float = 1.0,
):
    """Rotate by angle degrees, zoom in by `zoom` (wider by `aspect`) and shift by fractions
    of the size."""
    height, width = gray.shape
    theta = np.deg2rad(angle)
    zoom_x, zoom_y = zoom * np.sqrt(aspect), zoom / np.sqrt(aspect)
    cos_x, sin_x = np.cos(theta) / zoom_x, np.sin(theta) / zoom_x
    cos_y, sin_y = np.cos(theta) / zoom_y, np.sin(theta) / zoom_y
    cx, cy = width / 2.0, height / 2.0
    tx, ty = shift_x * width, shift_y * height
    # PIL wants the inverse map: output (x, y) -> input (a x + b y + c, d x + e y + f).
    coefficients = (
        cos_x,
        sin_x,
        cx - cos_x * (cx + tx) - sin_x * (cy + ty),
        -sin_y,
        cos_y,
        cy + sin_y * (cx + tx) - cos_y * (cy + ty),
    )
    image = Image.fromarray(gray).transform(
        (width, height), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR
    )
    return np.asarray(image, dtype=np.uint8)


def _gamma(gray: np.ndarray, gamma: float) -> np.ndarray:
    lut = np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return lut[gray]


def _contrast(gray: np.ndarray, factor: float) -> np.ndarray:
    mean = gray.mean()
    return np.clip((gray.astype(np.float32) - mean) * factor + mean, 0, 255).astype(np.uint8)


def _blur(gray: np.ndarray, radius: float) -> np.ndarray:
    image = Image.fromarray(gray).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image, dtype=np.uint8)


def _noise(gray: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = gray.astype(np.float32) + rng.normal(0.0, sigma, gray.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _resample(gray: np.ndarray, scale: float, down_filter: int) -> np.ndarray:
    height, width = gray.shape
    small = (max(8, round(width * scale)), max(8, round(height * scale)))
    image = Image.fromarray(gray).resize(small, down_filter)
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def _jpeg(gray: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def _exposure(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gamma and contrast, and sometimes blur: another machine's exposure and focus."""
    gray = _gamma(gray, float(np.exp(rng.uniform(np.log(0.6), np.log(1.7)))))
    gray = _contrast(gray, rng.uniform(0.7, 1.3))
    if rng.random() < 0.3:
        gray = _blur(gray, rng.uniform(0.3, 1.5))
    return gray


def augment(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random acquisition changes: position, zoom, rotation, exposure, sharpness, noise."""
    gray = _affine(
        gray,
        angle=rng.uniform(-10, 10),
        zoom=rng.uniform(0.85, 1.2),
        shift_x=rng.uniform(-0.07, 0.07),
        shift_y=rng.uniform(-0.07, 0.07),
    )
    gray = _exposure(gray, rng)
    if rng.random() < 0.3:
        gray = _noise(gray, rng.uniform(2.0, 10.0), rng)
    return gray


def augment_site(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`augment` plus what another hospital's export pipeline does to a film.

    Sharpness alone separates NORMAL from PNEUMONIA films of train/ with AUC 0.77 (0.67
    on test/): a model can learn "soft = pneumonia", and films exported from smaller
    originals or through another resizer or JPEG encoder then look like pneumonia. So
    films are randomly cropped with aspect changes, down- and re-sampled, and JPEG
    re-compressed, which makes sharpness and compression texture useless as a cue.
    """
    gray = _affine(
        gray,
        angle=rng.uniform(-10, 10),
        zoom=rng.uniform(0.85, 1.3),
        shift_x=rng.uniform(-0.08, 0.08),
        shift_y=rng.uniform(-0.08, 0.08),
        aspect=float(np.exp(rng.uniform(np.log(0.85), np.log(1.18)))),
    )
    gray = _exposure(gray, rng)
    if rng.random() < 0.5:
        filters = (
            Image.Resampling.BILINEAR,
            Image.Resampling.BICUBIC,
            Image.Resampling.BOX,
            Image.Resampling.NEAREST,
        )
        gray = _resample(gray, rng.uniform(0.4, 0.95), filters[rng.integers(len(filters))])
    if rng.random() < 0.3:
        gray = _noise(gray, rng.uniform(2.0, 10.0), rng)
    if rng.random() < 0.5:
        gray = _jpeg(gray, rng.integers(25, 96))
    return gray


# Training augmentation policies, by the name TrainConfig.augmentation gives.
AUGMENTATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "acquisition": augment,
    "site": augment_site,
}

# Plausible differences between hospitals and machines, for the shift stress test.
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda g: g,
    "gamma 0.6 (brighter)": lambda g: _gamma(g, 0.6),
    "gamma 1.6 (darker)": lambda g: _gamma(g, 1.6),
    "contrast x0.6": lambda g: _contrast(g, 0.6),
    "blur r=1.5": lambda g: _blur(g, 1.5),
    "noise sd=8": lambda g: _noise(g, 8.0, np.random.default_rng(0)),
    "zoom in x1.15": lambda g: _affine(g, 0, 1.15, 0, 0),
    "zoom out x0.9": lambda g: _affine(g, 0, 0.9, 0, 0),
    "rotate 8 deg": lambda g: _affine(g, 8, 1.0, 0, 0),
    "downsample x0.5": lambda g: _resample(g, 0.5, Image.Resampling.BILINEAR),
    "jpeg q30": lambda g: _jpeg(g, 30),
}
