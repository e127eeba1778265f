"""Standalone pneumonia inference for a chest X-ray .tflite model and its JSON sidecar.

This one file is copied to the device. It needs only the standard library, numpy,
Pillow and a TFLite interpreter (ai-edge-litert, else tflite-runtime, else
tensorflow.lite); it must never import edgexray or TensorFlow when a lighter runtime
is present. edgexray itself imports the preprocessing from here, so what is trained,
verified and shipped is preprocessed by the same code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Larger images are refused as decompression bombs. Real chest films are at most about
# 4500 x 4500 pixels; 50 megapixels leaves room and still bounds memory.
MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class InferenceError(Exception):
    """A problem with the model, its sidecar or the arguments (exit code 2)."""


class ImageError(Exception):
    """One image could not be read; the run goes on with the others."""


# --- preprocessing: the single source of truth for training, evaluation and devices ---


def load_grayscale(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read any JPEG/PNG as an 8-bit grayscale array, upright as the EXIF tag says.

    Raises:
        ImageError: the file is missing, not an image, truncated or too large.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"{path}: {width}x{height} pixels is over the {max_pixels} limit "
                    "(refused as a possible decompression bomb)"
                )
            image.load()  # decode now, so a truncated file fails here
            image = ImageOps.exif_transpose(image)
            return _to_uint8_gray(image)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ImageError(f"{path}: not a readable image ({err})") from None


def _to_uint8_gray(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit films use 12 to 16 bits of range: stretch what is there to 0..255.
        values = np.asarray(image, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            return np.zeros(values.shape, dtype=np.uint8)
        return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, as on a film, instead of an arbitrary colour.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def resize(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an 8-bit grayscale array to height x width, ignoring the aspect ratio."""
    if gray.shape == (height, width):
        return gray
    image = Image.fromarray(gray, mode="L").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def equalize(gray: np.ndarray) -> np.ndarray:
    """Global histogram equalisation of an 8-bit image.

    It maps any monotonic change of exposure, gamma or contrast to the same output,
    which is most of the difference between X-ray machines and settings.
    """
    histogram = np.bincount(gray.ravel(), minlength=256)
    cdf = np.cumsum(histogram)
    cdf_min = cdf[np.nonzero(histogram)[0][0]]
    if cdf[-1] == cdf_min:  # a flat image has nothing to stretch
        return np.zeros_like(gray)
    lut = np.round((cdf - cdf_min) * (255.0 / (cdf[-1] - cdf_min)))
    return np.clip(lut, 0, 255).astype(np.uint8)[gray]


def normalize(gray: np.ndarray, normalization: str) -> np.ndarray:
    """Turn a resized 8-bit grayscale array into the model's float input in [0, 1]."""
    if normalization == "equalize":
        gray = equalize(gray)
    elif normalization != "scale":
        raise InferenceError(f"unknown normalization {normalization!r} in the sidecar")
    return (gray.astype(np.float32) / 255.0)[..., np.newaxis]


def preprocess(path: str | Path, input_spec: dict) -> np.ndarray:
    """Read an image file and return the model input (height, width, 1) as float32."""
    gray = load_grayscale(path)
    gray = resize(gray, int(input_spec["height"]), int(input_spec["width"]))
    return normalize(gray, input_spec["normalization"])
