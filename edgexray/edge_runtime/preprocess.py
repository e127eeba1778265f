"""From an 8-bit grey film to the model's input: resize, equalise, scale.

The single source of truth for training, evaluation and devices: edgexray's data loading
and scoring call these functions, so what is trained, verified and shipped is
preprocessed by the same code (and EdgexrayPreprocess.java is held byte-identical to it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import readers, scope
from .errors import InferenceError

# The two commonest grey levels of a film hold few of its pixels (at most 19% in 300
# Kaggle films, full size); a drawing, a scanned page or a dithered two-tone image holds
# most of them there (a random two-tone pattern saved as JPEG at quality 90: 56%).
TWO_TONE_SHARE = 0.5
NORMALIZATIONS = ("equalize", "scale")


def resize(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an 8-bit grayscale array to height x width, ignoring the aspect ratio.

    Pillow's bilinear filter (antialiased when shrinking), width first, then height. The
    two explicit passes fix the order: Pillow 13 starts with the height for tall images,
    which moves some pixels by one grey level, so devices with another Pillow would
    disagree with training.
    """
    image = Image.fromarray(gray)
    if image.width != width:
        image = image.resize((width, image.height), Image.Resampling.BILINEAR)
    if image.height != height:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
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
    elif normalization not in NORMALIZATIONS:
        raise InferenceError(f"unknown normalization {normalization!r} in the sidecar")
    return (gray.astype(np.float32) / 255.0)[..., np.newaxis]


def resized_grayscale(path: str | Path, input_spec: dict) -> np.ndarray:
    """Read an image file and resize it to the model's height x width, still 8-bit."""
    return resized_film(path, input_spec)[0]


def resized_film(path: str | Path, input_spec: dict) -> tuple[np.ndarray, dict]:
    """`readers.read`, resized to the model's height x width: (8-bit film, info); info also
    holds "two_tones", `two_tone_share` of the film before resizing."""
    gray, info = readers.read(path)
    return fit(gray, info, input_spec), info


def fit(film: np.ndarray, info: dict, input_spec: dict) -> np.ndarray:
    """A film as read, resized to the model's height x width; info gets "two_tones", its
    `two_tone_share` before resizing (resizing blends two tones into many)."""
    info["two_tones"] = two_tone_share(film)
    return resize(film, int(input_spec["height"]), int(input_spec["width"]))


def two_tone_share(gray: np.ndarray) -> float:
    """The share of pixels in the two commonest grey levels (on at most ~512 x 512 of them).

    Resizing blends a two-tone image into many grey levels, so this is measured first.
    """
    sample = gray[:: max(1, gray.shape[0] // 512), :: max(1, gray.shape[1] // 512)]
    counts = np.bincount(sample.ravel(), minlength=256)
    return float(np.sort(counts)[-2:].sum() / sample.size)


def preprocess(path: str | Path, input_spec: dict) -> np.ndarray:
    """Read an image file and return the model input (height, width, 1) as float32."""
    return normalize(resized_grayscale(path, input_spec), input_spec["normalization"])


def quality_warning(gray: np.ndarray, two_tones: float | None = None) -> str | None:
    """Why a resized 8-bit image does not look like a film (blank, flat, two-tone), or None.

    Kept in every record of such an image, also under --no-scope-check; with the check,
    a flat or blank image is also out of scope (scope.flat_reason is that rule).
    two_tones: `two_tone_share` of the image before resizing, if known.
    """
    # Flat first: a blank image also has all its pixels in two grey levels (or one), and
    # "blank" is what the reader needs to hear.
    reason = scope.flat_reason(gray)
    if reason:
        return f"{reason}: the probability is not meaningful"
    if two_tones is not None and two_tones > TWO_TONE_SHARE:
        return (
            f"two-tone (bilevel) image ({100 * two_tones:.0f}% of pixels in two grey levels): "
            "the probability is not meaningful"
        )
    return None
