"""JPEG and PNG films: decoded by Pillow, made upright, as 8-bit grey levels.

Only the formats the project documents are decoded: Pillow would otherwise hand a
PostScript file named .jpg to Ghostscript, or read a TIFF nobody validated.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import scope
from ..errors import ImageError
from .files import bomb_message, open_regular

# A damaged EXIF block makes Pillow warn (with a source line) while reading the
# orientation, which it then leaves alone; only JPEG and PNG are decoded, so the TIFF
# parser's warnings are always about EXIF. Records, not stderr chatter, say what matters.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")

FORMATS = ("JPEG", "PNG")
# The pixel limit alone lets a colour image with alpha under it need gigabytes: memory
# goes by decoded bytes, and grey conversion makes up to four more copies of an RGBA image.
# 64 MiB keeps the largest films (4500 x 4500 RGB, 61 MB; 16-bit grey, 40 MB) and bounds
# the decoding peak to a few hundred MB on a 512 MB device.
MAX_DECODED_BYTES = 64 << 20
MODE_BYTES = {
    "1": 1,
    "L": 1,
    "P": 1,
    "LA": 2,
    "PA": 2,
    "La": 2,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "RGB": 3,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
}
# A 16-bit PNG is windowed on these percentiles of its values, not its minimum and maximum:
# one hot pixel or a burned-in marker at full scale would leave a few grey levels.
PNG16_PERCENTILES = (0.5, 99.5)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
# Pillow 9.4 (Debian Bookworm's, the 32-bit Pi's) has no in_place for exif_transpose.
EXIF_IN_PLACE = "in_place" in inspect.signature(ImageOps.exif_transpose).parameters


def read(path: str | Path, max_pixels: int) -> tuple[np.ndarray, dict]:
    """A JPEG or PNG file as 8-bit grey levels, and info: how they were made
    ("rendering"), and "colour" for a colour image (its `scope.colour_spread`)."""
    try:
        # Pillow's own bomb guard only warns below twice its limit; make it an error too.
        with warnings.catch_warnings(), open_regular(path) as handle:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle, formats=FORMATS) as image:
                return from_image(image, max_pixels, path)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a JPEG, PNG or DICOM image") from None
    except Exception as err:  # Pillow raises many types for malformed files
        raise ImageError(f"{path}: not a readable image ({err})") from None


def from_image(
    image: Image.Image, max_pixels: int, where="image", kind: str | None = None
) -> tuple[np.ndarray, dict]:
    """A picture opened by Pillow (a file's, or one a program holds) as 8-bit grey levels,
    and info, as `read` gives them: decoded under the size limits, made upright as its EXIF
    orientation says, a 16-bit one windowed on robust percentiles."""
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(bomb_message(where, width, height, max_pixels))
    decoded = width * height * MODE_BYTES.get(image.mode, 4)
    if decoded > MAX_DECODED_BYTES:
        raise ImageError(
            f"{where}: {width}x{height} {image.mode} decodes to {decoded >> 20} MiB, "
            f"over the {MAX_DECODED_BYTES >> 20} MiB limit (a device has little memory)"
        )
    image.load()  # decode now, so a truncated file fails here
    # Before turning it upright: the pixels as stored are what an Android app gets too
    # (EdgexrayScope.colourSpread samples the same ones).
    info = {} if image.mode in GREY_MODES else {"colour": _colour_spread(image)}
    kind = kind or image.format or "image"
    # In place: a film is megabytes, and every copy counts on a small device.
    if EXIF_IN_PLACE:
        ImageOps.exif_transpose(image, in_place=True)
    else:
        image = ImageOps.exif_transpose(image)
    gray, info["rendering"] = _to_uint8_gray(image, kind)
    return gray, info


# What a film held in memory as an array may be: grey levels (8 or 16 bits), or colour.
ARRAY_KINDS = {
    (2, "uint8"): "8-bit grey levels",
    (2, "uint16"): "16-bit grey levels",
    (3, "uint8"): "RGB or RGBA colour (height x width x 3 or 4)",
}


def from_array(array: np.ndarray, max_pixels: int) -> tuple[np.ndarray, dict]:
    """A film a program holds as a numpy array (ARRAY_KINDS), read as a picture of it is.

    Raises:
        ImageError: another dtype or shape (float values have no one grey scale).
    """
    array = np.asarray(array)
    channels_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
    if (array.ndim, array.dtype.name) not in ARRAY_KINDS or not channels_ok:
        kinds = "; ".join(ARRAY_KINDS.values())
        raise ImageError(
            f"array: {array.dtype} of shape {array.shape} is not a film ({kinds} are read)"
        )
    with Image.fromarray(np.ascontiguousarray(array)) as image:
        return from_image(image, max_pixels, "array")


def _colour_spread(image: Image.Image) -> float:
    """scope.colour_spread of the RGB channels (alpha ignored), on every step-th pixel of
    every step-th row (step = ceil(longer side / COLOUR_SAMPLE)), so a large photograph
    costs no more than a 256-pixel one."""
    step = max(1, -(-max(image.size) // scope.COLOUR_SAMPLE))
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)[::step, ::step]
    return scope.colour_spread(rgb)


def _to_uint8_gray(image: Image.Image, kind: str = "image") -> tuple[np.ndarray, str]:
    """8-bit grey levels of a decoded image, and how they were made ("8-bit JPEG", ...)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        gray, how = window_percentiles(np.asarray(image, dtype=np.float32))
        return gray, f"16-bit {kind}, {how}"
    how = f"8-bit {kind}" + ("" if image.mode == "L" else f" ({image.mode} to grey)")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, as on a film, instead of an arbitrary colour.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8), how


def window_percentiles(values: np.ndarray) -> tuple[np.ndarray, str]:
    """A 16-bit film (12 to 16 bits of range used) to 0..255, windowed on PNG16_PERCENTILES.

    Values below the low percentile become 0 and above the high one 255, so a hot pixel
    or a burned-in marker at full scale cannot squeeze the film into a few grey levels.
    A film flat between the percentiles (nearly all one value) falls back to its range.
    """
    low, high = (float(v) for v in np.percentile(values, PNG16_PERCENTILES))
    first, last = PNG16_PERCENTILES
    how = f"window p{first:g}-p{last:g} ({low:g}..{high:g})"
    if high <= low:
        low, high = float(values.min()), float(values.max())
        how = f"full range ({low:g}..{high:g})"
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8), "flat"
    values = np.clip(values, low, high)
    values -= low
    values *= 255.0 / (high - low)
    return np.round(values).astype(np.uint8), how
