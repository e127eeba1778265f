"""Standalone pneumonia inference for a chest X-ray .tflite model and its JSON sidecar.

This module and its siblings (dicom.py, ...) go to the device as the package folder
edge_runtime/, run by a small infer.py launcher beside it (bundle templates); they import
each other only relatively. They need only the standard library, numpy, Pillow and a
TFLite interpreter (ai-edge-litert, else tflite-runtime, else tensorflow.lite), plus
pydicom for DICOM films, imported only when one is read; they must never import edgexray
or TensorFlow when a lighter runtime is present. edgexray itself imports the
preprocessing from here, so what is trained, verified and shipped is preprocessed by the
same code.

It is also the one home of the image-discovery rule (`is_image_file`, `image_files`) and
of the decoder (`load_film`): edgexray's data loading, evaluation and `predict` call them,
and the bundle's watch-folder script asks it with `--list-images`, so every reader agrees
on what is a film and how it is read.

Command line (exit 0 when every image was read and in scope, 3 when some could not be
read, else 4 when some were out of scope (label OUT_OF_SCOPE, see scope.py), 2 for bad
arguments, a missing, corrupt or mismatched model, or results that could not be written):

    python infer.py --model model.tflite IMAGE_OR_DIR [...] [--format jsonl|csv] [--threads N]
        [--explain DIR] [--report FILE] [--no-scope-check]
    python infer.py --list-images IMAGE_OR_DIR [...]
    python infer.py serve --state DIR --allow-ae AE_TITLE [...]   (the DICOM node: node.py)

It stays one module, over the usual size, on purpose: it is the device's whole runtime
for JPEG and PNG films.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import json
import os
import re
import stat
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# A damaged EXIF block makes Pillow warn (with a source line) while reading the
# orientation, which it then leaves alone; only JPEG and PNG are decoded, so the TIFF
# parser's warnings are always about EXIF. Records, not stderr chatter, say what matters.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")

try:
    from . import scope
except ImportError:  # run as a file (`python infer.py`, or loaded by path by a benchmark):
    # its sibling scope.py is loaded from the same folder. Copied alone, without it, no
    # model can be run (Classifier refuses: the guard is never optional).
    import importlib.util

    _SCOPE_FILE = Path(__file__).resolve().with_name("scope.py")
    scope = None
    if _SCOPE_FILE.is_file():
        _spec = importlib.util.spec_from_file_location("edgexray_scope", _SCOPE_FILE)
        scope = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
        _spec.loader.exec_module(scope)

# Larger images are refused as decompression bombs. Real chest films are at most about
# 4500 x 4500 pixels; 50 megapixels leaves room and still bounds memory.
MAX_PIXELS = 50_000_000
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
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".dcm")
# A 16-bit PNG is windowed on these percentiles of its values, not its minimum and maximum:
# one hot pixel or a burned-in marker at full scale would leave a few grey levels.
PNG16_PERCENTILES = (0.5, 99.5)
# Only the formats the project documents are decoded: Pillow would otherwise hand a
# PostScript file named .jpg to Ghostscript, or read a TIFF nobody validated.
IMAGE_FORMATS = ("JPEG", "PNG")
# The classes in the order edgexray trains them: index = model target, so the one output
# value speaks of LABELS[1]. Training, the host's gate and every sidecar use this table;
# a sidecar naming other classes, or these in another order, would print pneumonia as
# NORMAL, so it is refused (the host imports it from here: the device cannot import edgexray).
LABELS = ("NORMAL", "PNEUMONIA")
POSITIVE_LABEL = LABELS[1]
# What the model's one output value is: "logit" (edgexray 0.2 on: the host takes the
# sigmoid, so a uint8 output keeps its resolution) or "probability" (sigmoid in the model).
# A sidecar must say which: read the wrong way, a logit of 4.3 would be "probability" 4.3.
OUTPUT_KINDS = ("logit", "probability")
# Labels end up in labels.txt, CSV headers and the Android README's Kotlin strings: plain
# names only, so no newline or quote can break any of them.
LABEL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9 _-]{0,31}")
# The two commonest grey levels of a film hold few of its pixels (at most 19% in 300
# Kaggle films, full size); a drawing, a scanned page or a dithered two-tone image holds
# most of them there (a random two-tone pattern saved as JPEG at quality 90: 56%).
TWO_TONE_SHARE = 0.5
MAX_THREADS = 64  # far above any device's cores; huge values crash the interpreter
SIDECAR_SCHEMA = "edgexray.sidecar/1"
SIDECAR_FIELDS = ("model_file", "sha256", "labels", "input", "output", "threshold")
INPUT_FIELDS = ("height", "width", "normalization")
RECORD_FIELDS = (
    "path",
    "probability",
    "label",
    "threshold",
    "latency_ms",
    "error",
    "quality_warning",
    "rendering",
    "overlay",
    "heatmap",
    "in_scope",
    "scope_reason",
    "scope_distance",
)
FORMATS = ("jsonl", "csv")
# 3 wins over 4: an unreadable film has no answer at all, an out-of-scope one is refused
# with a reason in its record; either way the records must be read.
EXIT_OK, EXIT_BAD_INPUT, EXIT_UNREADABLE, EXIT_OUT_OF_SCOPE = 0, 2, 3, 4


class InferenceError(Exception):
    """A problem with the model, its sidecar or the arguments (exit code 2)."""


class ImageError(Exception):
    """One image could not be read; the run goes on with the others."""


# --- preprocessing: the single source of truth for training, evaluation and devices ---


def is_image_file(path: str | Path) -> bool:
    """The one rule for what is a film: a regular file (not a FIFO, device or folder) with
    a .jpeg/.jpg/.png/.dcm suffix in any case, or any other name with the DICOM preamble
    (X-ray units and PACS exports often write DICOM without a suffix, or with a UID as the
    name); not hidden (macOS "._x.jpeg" resource forks and rsync's half-copied temporaries
    start with a dot), and not a DICOMDIR (an index of the films, not a film)."""
    path = Path(path)
    name = path.name
    if name.startswith(".") or not path.is_file():
        return False
    if name.lower().endswith(IMAGE_SUFFIXES):
        return True
    dicom = _dicom_module()
    return dicom is not None and name.upper() != "DICOMDIR" and dicom.has_preamble(path)


def image_files(folder: str | Path) -> list[Path]:
    """Every image file under folder by `is_image_file`, sorted; hidden folders are skipped."""
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        found += [Path(root, name) for name in files if is_image_file(Path(root, name))]
    return sorted(found)


def _open_regular(path: str | Path):
    """Open a regular file for reading; anything else is refused without blocking.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer
    forever; fstat then refuses it (and devices and folders) by what it is, not its name.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ImageError(f"{path}: cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ImageError(f"{path}: not a regular file")
    return os.fdopen(descriptor, "rb")


EXIF_IN_PLACE = "in_place" in inspect.signature(ImageOps.exif_transpose).parameters


def load_grayscale(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a film (JPEG, PNG or DICOM) as an 8-bit grayscale array (see `load_film`)."""
    return load_film(path, max_pixels)[0]


def load_film(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """Read a film as an 8-bit grayscale array, and how it was rendered.

    DICOM (by `dicom.is_dicom`) goes through `dicom.read_film`'s one rendering rule; JPEG
    and PNG are made upright as the EXIF tag says, a 16-bit PNG windowed on robust
    percentiles.

    Returns:
        (gray, info): info has "rendering", a short description of how the grey levels
        were made, for DICOM "tags" (Modality, BodyPartExamined, ViewPosition...), and
        for a colour JPEG or PNG "colour", its `scope.colour_spread` (the scope guard's
        photograph check).

    Raises:
        ImageError: the file is missing, not a regular file, not a JPEG, PNG or DICOM film,
            truncated or too large; or DICOM support is not installed.
    """
    dicom = _dicom_module()
    if dicom is not None and dicom.is_dicom(path):
        return dicom.read_film(path, max_pixels)
    if dicom is None and str(path).lower().endswith(".dcm"):
        raise ImageError(f"{path}: DICOM needs infer.py's package folder, edge_runtime/")
    return _load_picture(path, max_pixels)


def _dicom_module():
    """The sibling dicom module (pydicom itself is imported only to read a DICOM file), or
    None when this file runs alone, copied without its package folder."""
    try:
        from . import dicom
    except ImportError:
        return None
    return dicom


def _load_picture(path: str | Path, max_pixels: int) -> tuple[np.ndarray, dict]:
    """A JPEG or PNG file as 8-bit grey levels, and info: how they were made
    ("rendering"), and "colour" for a colour image."""
    try:
        # Pillow's own bomb guard only warns below twice its limit; make it an error too.
        with warnings.catch_warnings(), _open_regular(path) as handle:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(_bomb_message(path, width, height, max_pixels))
                decoded = width * height * MODE_BYTES.get(image.mode, 4)
                if decoded > MAX_DECODED_BYTES:
                    raise ImageError(
                        f"{path}: {width}x{height} {image.mode} decodes to {decoded >> 20} MiB, "
                        f"over the {MAX_DECODED_BYTES >> 20} MiB limit (a device has little memory)"
                    )
                image.load()  # decode now, so a truncated file fails here
                # Before turning it upright: the pixels as stored are what an Android app
                # gets too (EdgexrayScope.colourSpread samples the same ones).
                info = {} if image.mode in GREY_MODES else {"colour": _colour_spread(image)}
                # In place: a film is megabytes, and every copy counts on a small device.
                kind = image.format
                # Pillow 9.4 (Debian Bookworm's, the 32-bit Pi's) has no in_place: a copy.
                if EXIF_IN_PLACE:
                    ImageOps.exif_transpose(image, in_place=True)
                else:
                    image = ImageOps.exif_transpose(image)
                gray, info["rendering"] = _to_uint8_gray(image, kind)
                return gray, info
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a JPEG, PNG or DICOM image") from None
    except Exception as err:  # Pillow raises many types for malformed files
        raise ImageError(f"{path}: not a readable image ({err})") from None


def _bomb_message(path, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{path}: {width}x{height} pixels is over the {max_pixels} limit "
        "(refused as a possible decompression bomb)"
    )


GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


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
    elif normalization != "scale":
        raise InferenceError(f"unknown normalization {normalization!r} in the sidecar")
    return (gray.astype(np.float32) / 255.0)[..., np.newaxis]


def resized_grayscale(path: str | Path, input_spec: dict) -> np.ndarray:
    """Read an image file and resize it to the model's height x width, still 8-bit."""
    return resized_film(path, input_spec)[0]


def resized_film(path: str | Path, input_spec: dict) -> tuple[np.ndarray, dict]:
    """`load_film`, resized to the model's height x width: (8-bit film, info); info also
    holds "two_tones", `two_tone_share` of the film before resizing."""
    gray, info = load_film(path)
    info["two_tones"] = two_tone_share(gray)
    return resize(gray, int(input_spec["height"]), int(input_spec["width"])), info


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


# --- the model: interpreter, sidecar, quantization ------------------------------------


def interpreter_class():
    """The lightest TFLite interpreter available: LiteRT, tflite-runtime, then TensorFlow."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            try:
                from tensorflow.lite import Interpreter  # the heavy last resort
            except ImportError:
                raise InferenceError(
                    "no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime)"
                ) from None
    return Interpreter


def load_interpreter(model_path: str | Path, threads: int | None = None):
    """An interpreter for a .tflite file; raises InferenceError if it cannot be loaded."""
    try:
        return interpreter_class()(model_path=str(model_path), num_threads=threads)
    except (ValueError, RuntimeError, OSError) as err:
        raise InferenceError(f"{model_path}: not a loadable .tflite model ({err})") from None


def sigmoid(logit):
    """The probability of a logit, without overflow for large negative logits."""
    logit = np.asarray(logit, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logit))


def run_interpreter(interpreter, image: np.ndarray, output_kind: str) -> float:
    """Run one float image (H, W, 1) in [0, 1] and return the pneumonia probability.

    Quantized models get their input quantized and their output dequantized with the
    scale and zero-point the interpreter reports for those tensors; a model whose sidecar
    output "kind" is "logit" gets the sigmoid taken here.
    """
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    output = invoke(interpreter, input_batch(image, input_detail), input_detail, output_detail)
    return to_probability(output, output_kind)


def to_probability(output: float, output_kind: str) -> float:
    """The pneumonia probability from the model's dequantized output (OUTPUT_KINDS).

    Raises:
        InferenceError: the value is not a probability in [0, 1] (a logit model whose
            sidecar says "probability"): it is never printed or compared as one.
    """
    probability = float(sigmoid(output)) if output_kind == "logit" else output
    if not 0.0 <= probability <= 1.0:  # also refuses NaN
        raise InferenceError(
            f"the model gave {probability:g}, not a probability in [0, 1]: its sidecar's "
            f"output.kind {output_kind!r} does not describe this model"
        )
    return probability


def invoke(interpreter, batch: np.ndarray, input_detail: dict, output_detail: dict) -> float:
    """Run one ready input tensor (1, H, W, 1) and return its dequantized output."""
    interpreter.set_tensor(input_detail["index"], batch)
    interpreter.invoke()
    output = float(interpreter.get_tensor(output_detail["index"]).reshape(-1)[0])
    if np.issubdtype(output_detail["dtype"], np.integer):
        scale, zero_point = output_detail["quantization"]
        output = (output - zero_point) * scale
    return output


def dequantized(values: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor's values as float64, dequantized when the tensor is integer."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero_point = detail["quantization"]
        values = (values - zero_point) * scale
    return values


def input_batch(image: np.ndarray, input_detail: dict) -> np.ndarray:
    """The input tensor (1, H, W, 1) for a float image, quantized when the input is integer."""
    batch = image[np.newaxis].astype(np.float32)
    scale, zero_point = input_detail["quantization"]
    if np.issubdtype(input_detail["dtype"], np.integer):
        info = np.iinfo(input_detail["dtype"])
        batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
    return batch.astype(input_detail["dtype"])


def levels_are_input(input_detail: dict) -> bool:
    """True when the input is uint8 and quantizing v / 255 gives back v for every grey level
    v (scale 1/255, zero point 0): then the 8-bit image is the input tensor as it is."""
    if np.dtype(input_detail["dtype"]) != np.uint8:
        return False
    levels = np.arange(256, dtype=np.uint8).reshape(256, 1, 1)
    return np.array_equal(
        input_batch(normalize(levels, "scale"), input_detail).reshape(-1), levels.reshape(-1)
    )


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_sidecar(model_path: str | Path) -> dict:
    """Read model.json next to model.tflite and check it describes this very file.

    Raises:
        InferenceError: missing model or sidecar, missing fields, or a sha256 mismatch.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InferenceError(f"model not found: {model_path}")
    sidecar_path = model_path.with_suffix(".json")
    try:
        sidecar = json.loads(sidecar_path.read_text())
    except FileNotFoundError:
        raise InferenceError(
            f"sidecar not found: {sidecar_path} (it says how to feed the model)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InferenceError(f"{sidecar_path}: not valid JSON ({err})") from None
    missing = [f for f in SIDECAR_FIELDS if not isinstance(sidecar, dict) or f not in sidecar]
    if not missing:
        spec = sidecar["input"]
        missing = [
            f"input.{f}" for f in INPUT_FIELDS if not isinstance(spec, dict) or f not in spec
        ]
    if missing:
        raise InferenceError(f"{sidecar_path}: missing fields {', '.join(missing)}")
    problem = _sidecar_problem(sidecar)
    if problem:
        raise InferenceError(f"{sidecar_path}: {problem}")
    try:
        digest = sha256_of(model_path)
    except OSError as err:
        raise InferenceError(f"{model_path}: cannot read the model ({err.strerror})") from None
    if digest != sidecar["sha256"]:
        raise InferenceError(
            f"{model_path} does not match its sidecar (sha256 differs): "
            "the model or the sidecar was replaced"
        )
    return sidecar


def _sidecar_problem(sidecar: dict) -> str | None:
    """What makes a sidecar unusable, or None, checking it as a whole. A wrong threshold,
    label order, positive label or output kind would not crash: it would silently call
    pneumonia normal, so each is checked."""
    labels, threshold, spec = sidecar["labels"], sidecar["threshold"], sidecar["input"]
    if not (
        isinstance(labels, list)
        and len(labels) == 2
        and all(isinstance(label, str) for label in labels)
        and labels[0] != labels[1]
    ):
        return "labels must be two different names, the negative class first"
    if not all(LABEL_PATTERN.fullmatch(label) for label in labels):
        return (
            "labels must be plain names (a letter, then up to 31 letters, digits, spaces, _ or -)"
        )
    if labels != list(LABELS):
        return (
            f"labels {labels} are not the order the model was trained in, {list(LABELS)} "
            f"(its output is the probability of {POSITIVE_LABEL})"
        )
    if sidecar.get("positive_label") != POSITIVE_LABEL:
        return f"positive_label must be {POSITIVE_LABEL!r}, got {sidecar.get('positive_label')!r}"
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        return "threshold must be a number"
    if not 0.0 <= threshold <= 1.0:  # also refuses NaN
        return f"threshold {threshold} is not a probability in [0, 1]"
    for field in ("height", "width"):
        if isinstance(spec[field], bool) or not isinstance(spec[field], int) or spec[field] < 1:
            return f"input.{field} must be a positive whole number"
    if spec["normalization"] not in ("equalize", "scale"):
        return f"unknown input.normalization {spec['normalization']!r}"
    output = sidecar["output"]
    if not isinstance(output, dict) or output.get("kind") not in OUTPUT_KINDS:
        return f"output.kind must be one of {', '.join(OUTPUT_KINDS)} (what the output value is)"
    if sidecar.get("scope") is not None:
        return scope.problem(sidecar["scope"])
    return None


def output_range_problem(output_detail: dict, output_kind: str) -> str | None:
    """Why an integer output cannot be what output.kind says, or None.

    A quantized output's scale and zero point bound every value it can take; a sigmoid's
    output lies in [0, 1], so a wider range means the model emits the logit. (A float
    output has no such bound: `to_probability` checks each value instead.)
    """
    if output_kind != "probability" or not np.issubdtype(output_detail["dtype"], np.integer):
        return None
    scale, zero_point = output_detail["quantization"]
    if not scale:
        return None
    info = np.iinfo(output_detail["dtype"])
    low, high = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    if low < -1e-6 or high > 1.0 + 1e-6:
        return (
            f"the sidecar says output.kind 'probability', but the output ranges over "
            f"[{low:.3g}, {high:.3g}]: the model emits the logit"
        )
    return None


class Classifier:
    """A .tflite pneumonia model fed exactly as its sidecar says.

    Output 0 is the pneumonia logit (or probability); a model with scope statistics has
    its pooled features as another output, named by the sidecar's scope block. With
    check_scope (the default) every record says whether the film is in scope.
    """

    def __init__(
        self, model_path: str | Path, threads: int | None = None, check_scope: bool = True
    ):
        if scope is None:
            raise InferenceError(
                "the out-of-scope guard needs scope.py next to infer.py: run the "
                "edge_runtime package, as a bundle does"
            )
        self.model_path = Path(model_path)
        self.check_scope = check_scope
        self.sidecar = load_sidecar(model_path)
        self.interpreter = load_interpreter(model_path, threads)
        try:
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise InferenceError(f"{model_path}: cannot allocate tensors ({err})") from None
        spec = self.sidecar["input"]
        expected = [1, int(spec["height"]), int(spec["width"]), 1]
        shape = [int(d) for d in self.interpreter.get_input_details()[0]["shape"]]
        if shape != expected:
            raise InferenceError(
                f"{model_path}: input shape {shape} does not match its sidecar {expected}"
            )
        outputs = self.interpreter.get_output_details()
        if int(np.prod(outputs[0]["shape"])) != 1:
            # One sigmoid unit is the pneumonia probability; a two-class softmax read the
            # same way would silently return the probability of NORMAL.
            raise InferenceError(f"{model_path}: expected one output value")
        self.scope = self.sidecar.get("scope")
        if self.scope is not None:
            found = scope.problem(self.scope, [int(np.prod(o["shape"])) for o in outputs])
            if found:
                raise InferenceError(f"{model_path}: {found}")
        self.outputs = outputs
        self.threshold = float(self.sidecar["threshold"])
        self.labels = [str(label) for label in self.sidecar["labels"]]
        self.output_kind = self.sidecar["output"]["kind"]
        problem = output_range_problem(outputs[0], self.output_kind)
        if problem:
            raise InferenceError(f"{model_path}: {problem}")
        # Read once: the interpreter builds these dicts afresh on every call.
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_detail = outputs[0]
        self.levels_are_input = levels_are_input(self.input_detail)

    def model_input(self, path: str | Path) -> np.ndarray:
        """The input tensor (1, H, W, 1) for one image file (raises ImageError if unreadable)."""
        return self.tensor_of(resized_grayscale(path, self.sidecar["input"]))

    def tensor_of(self, gray: np.ndarray) -> np.ndarray:
        """The input tensor (1, H, W, 1) for a resized 8-bit grey image.

        For a full-int8 model fed grey levels as they are (levels_are_input), the 8-bit
        image skips the float round trip of normalize and input_batch: the bytes are the
        same, checked for all 256 levels when the model was loaded.
        """
        normalization = self.sidecar["input"]["normalization"]
        if not self.levels_are_input:
            return input_batch(normalize(gray, normalization), self.input_detail)
        if normalization == "equalize":
            gray = equalize(gray)
        return gray[np.newaxis, :, :, np.newaxis]

    def run(self, batch: np.ndarray) -> float:
        """Pneumonia probability of one input tensor from model_input."""
        output = invoke(self.interpreter, batch, self.input_detail, self.output_detail)
        return to_probability(output, self.output_kind)

    def probability(self, path: str | Path) -> float:
        """Pneumonia probability of one image file (raises ImageError if unreadable)."""
        return self.run(self.model_input(path))

    def feature_output(self) -> dict | None:
        """index, name and size of the pooled-features output (the second output of a
        model exported for the scope guard), or None."""
        if len(self.outputs) < 2:
            return None
        detail = self.outputs[1]
        return {
            "index": 1,
            "name": detail["name"],
            "size": int(np.prod(detail["shape"])),
        }

    def features(self) -> np.ndarray | None:
        """The dequantized pooled features of the last `run`, or None without them."""
        if self.scope is not None:
            detail = self.outputs[self.scope["feature_output"]["index"]]
        elif len(self.outputs) > 1:
            detail = self.outputs[1]
        else:
            return None
        return dequantized(self.interpreter.get_tensor(detail["index"]), detail)

    def scope_decision(self, gray: np.ndarray, info: dict) -> scope.Decision:
        """The guard's answer for a film just `run` (its features are read from the model)."""
        if not self.check_scope:
            return scope.Decision(None, scope.NOT_CHECKED)
        return scope.decide(
            gray, self.features(), self.scope, colour=info.get("colour"), tags=info.get("tags")
        )

    def classify(self, path: str | Path) -> dict:
        """One record: path, probability, label, threshold, latency_ms, rendering,
        in_scope, scope_reason (and scope_distance when measured); or path and error.

        A film out of scope gets the label OUT_OF_SCOPE: its probability is recorded but
        not turned into NORMAL or PNEUMONIA. latency_ms covers reading, preprocessing,
        the interpreter call and the scope check. A flat or blank image also gets
        quality_warning (see `quality_warning`).
        """
        return self.classify_film(path)[0]

    def classify_film(self, path: str | Path) -> tuple[dict, np.ndarray | None]:
        """`classify`, and the 8-bit film as read (None when it could not be read), so that
        a heatmap or a report shows the very film that was classified: the record's path
        is only its display name (a file name that is not UTF-8 is escaped there)."""
        started = time.perf_counter()
        spec = self.sidecar["input"]
        try:
            film, info = load_film(path)
        except ImageError as err:
            record = {
                "path": clean_text(str(path)),
                "error": clean_text(str(err).replace(f"{path}: ", "", 1)),
            }
            return record, None
        info["two_tones"] = two_tone_share(film)
        gray = resize(film, int(spec["height"]), int(spec["width"]))
        probability = self.run(self.tensor_of(gray))
        decision = self.scope_decision(gray, info)
        label = self.labels[1] if probability >= self.threshold else self.labels[0]
        record = {
            "path": clean_text(str(path)),
            "probability": probability,
            "label": scope.OUT_OF_SCOPE if decision.in_scope is False else label,
            "threshold": self.threshold,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
            "rendering": info["rendering"],
            "in_scope": decision.in_scope,
            "scope_reason": decision.reason,
        }
        if decision.distance is not None:
            record["scope_distance"] = round(decision.distance, 4)
        warning = quality_warning(gray, info.get("two_tones"))
        if warning:
            record["quality_warning"] = warning
        return record, film


def clean_text(text: str) -> str:
    """text as valid Unicode for a record: the bytes of a file name that are not UTF-8
    (which Python reads as lone surrogates, written to JSON as \\udce9) become \\xe9."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name makes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --- the command line -------------------------------------------------------------------


def find_images(inputs) -> list[Path]:
    """The images to classify: files as given, folders walked by `image_files`.

    A given path that is not an image file (missing, a FIFO, a folder-less typo) stays in
    the list, so it gets an error record instead of vanishing.
    """
    images = []
    for item in map(Path, inputs):
        images += image_files(item) if item.is_dir() else [item]
    return images


class OutputError(InferenceError):
    """The results could not be written (a full disk, a closed stream): exit code 2."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write data to a temporary file beside path, then rename it into place, so a reader
    never sees half a file (heatmaps, reports).

    Raises:
        OutputError: it could not be written (a full disk, a read-only folder).
    """
    temporary = path.with_name(f".{path.name}.partial")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def write_records(records, stream, fmt: str = "jsonl") -> int:
    """Write each record as soon as it is ready (jsonl or csv).

    Returns:
        The exit code they call for: EXIT_UNREADABLE when some had errors, else
        EXIT_OUT_OF_SCOPE when some were out of scope, else EXIT_OK.

    Raises:
        OutputError: a write or flush failed; what was not flushed is lost, so the caller
            must not treat those images as done.
        BrokenPipeError: the reader went away.
    """
    writer = csv.DictWriter(stream, RECORD_FIELDS, lineterminator="\n") if fmt == "csv" else None
    if writer:
        _emit(stream, writer.writerow, {field: field for field in RECORD_FIELDS})  # header
    errors = out_of_scope = 0
    for record in records:
        errors += "error" in record
        out_of_scope += record.get("in_scope") is False
        if writer:
            _emit(stream, writer.writerow, record)
        else:
            _emit(stream, stream.write, json.dumps(record) + "\n")
    return EXIT_UNREADABLE if errors else EXIT_OUT_OF_SCOPE if out_of_scope else EXIT_OK


def _emit(stream, write, item) -> None:
    """write(item), flushed at once so a watcher or a pipe sees each result; a failed
    write (a full disk) becomes OutputError, while BrokenPipeError passes through."""
    try:
        write(item)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write the results: {err.strerror or err}") from None


def check_threads(threads: int | None) -> None:
    """Refuse a thread count outside 1..MAX_THREADS (None lets the runtime choose)."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise InferenceError(f"threads must be between 1 and {MAX_THREADS}, not {threads}")


def run(
    model_path: str | Path,
    inputs,
    fmt: str = "jsonl",
    threads: int | None = None,
    stream=None,
    explain_dir: str | Path | None = None,
    report_path: str | Path | None = None,
    check_scope: bool = True,
    grid: str | None = None,
) -> int:
    """Classify every image in inputs (files or folders), one record per image on stream.

    With explain_dir, each readable film's heatmap (overlay PNG and map .npy, explain.py)
    is written there and its record carries their paths; with report_path, one HTML
    report of the batch is written there at the end (report.py); grid ("PATCH/STRIDE")
    replaces their default occlusion grid. A model without scope statistics gets one
    warning line on stderr: its records say in_scope null, and nothing catches a film it
    cannot read (check_scope=False: not checked at all).

    Returns:
        EXIT_OK when every image was read and in scope (or not checked),
        EXIT_UNREADABLE when some could not be read, else EXIT_OUT_OF_SCOPE when some
        were out of scope.

    Raises:
        InferenceError: a bad format or thread count, no images at all, or a missing,
            corrupt or mismatched model.
        OutputError: the records could not be written.
    """
    if fmt not in FORMATS:
        raise InferenceError(f"unknown format {fmt!r}: choose {' or '.join(FORMATS)}")
    check_threads(threads)
    explaining = explain_dir is not None or report_path is not None
    if explaining:
        explain, report = _heatmap_modules()
        occlusion = explain.parse_grid(grid) if grid else explain.DEFAULT_GRID
    if report_path is not None:
        report.check_writable(report_path)
    classifier = Classifier(model_path, threads, check_scope)
    if explaining:  # a patch larger than the input is refused before the first film
        spec = classifier.sidecar["input"]
        occlusion.passes(int(spec["height"]), int(spec["width"]))
    paths = find_images(inputs)
    if not paths:
        raise InferenceError(f"no images found in {', '.join(map(str, inputs))}")
    if check_scope and classifier.scope is None:
        print(
            f"warning: {Path(model_path).name} has {scope.NO_STATISTICS}: films it was not "
            "trained on are not caught (records say in_scope null)",
            file=sys.stderr,
        )
    classified = map(classifier.classify_film, paths)
    entries = [] if report_path is not None else None
    if explaining:
        records = explain.explain_records(classifier, classified, explain_dir, entries, occlusion)
    else:
        records = (record for record, _ in classified)
    code = write_records(records, stream or sys.stdout, fmt)
    if report_path is not None:
        legend = explain.legend_html(occlusion)
        report.write(report_path, entries, classifier.sidecar, model_path, legend)
    return code


def _heatmap_modules():
    """explain.py and report.py, the sibling modules of this package (imported only when
    asked for, so plain classification starts as fast as before)."""
    try:
        from . import explain, report
    except ImportError:  # infer.py copied alone, run as a script
        raise InferenceError(
            "--explain and --report need the whole edge_runtime package (explain.py and "
            "report.py next to infer.py)"
        ) from None
    return explain, report


def list_images(inputs, stream=None) -> None:
    """Write the image files among inputs (folders walked), each ended by a NUL byte.

    The watch-folder script moves exactly these, so it follows the same rule as this file
    without a shell copy of it; NUL (for `xargs -0`) keeps any file name intact.
    """
    images = [path for path in find_images(inputs) if is_image_file(path)]
    stream = stream or sys.stdout
    _emit(stream, stream.write, "".join(f"{path}\0" for path in images))


def silence_stdout() -> None:
    """Point stdout at /dev/null after a failed write, so the exit flush cannot fail again
    (Python would print an "Exception ignored" traceback and exit 120)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (a test runner)
        pass


def default_model() -> Path | None:
    """The bundle's .tflite when there is exactly one: next to this file, or next to its
    package folder (a bundle's edge_runtime/ sits beside the model and the launcher)."""
    here = Path(__file__).resolve().parent
    for folder in (here, here.parent):
        models = sorted(folder.glob("*.tflite"))
        if models:
            return models[0] if len(models) == 1 else None
    return None


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see --help)\n")


def main(argv=None) -> int:
    """Run the command line; return the exit code instead of exiting."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["serve"]:  # the DICOM node; a film named serve is ./serve
        return _serve(arguments[1:])
    parser = _Parser(
        prog=Path(sys.argv[0]).name if argv is None else "infer.py",
        description="Pneumonia probability of chest X-ray images with a .tflite model and "
        "its JSON sidecar. Prints one record per image.",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files, or folders walked for .jpeg/.jpg/.png/.dcm and DICOM files",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model file, its sidecar MODEL.json next to it "
        "(default: the only .tflite next to this script)",
    )
    parser.add_argument("--format", choices=FORMATS, default="jsonl", help="output format")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"interpreter threads, 1 to {MAX_THREADS} (default: the runtime's choice)",
    )
    parser.add_argument(
        "--explain",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write each film's heatmap into DIR (FILM.heatmap.png overlay and "
        "FILM.heatmap.npy map; records get their paths); one model run per position of "
        "the occlusion grid",
    )
    parser.add_argument(
        "--grid",
        default=None,
        metavar="PATCH/STRIDE",
        help="occlusion grid of --explain and --report in pixels of the model input "
        "(default 32/24, 26 model runs a film; 20/10 is finer and takes 145)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write one self-contained HTML report of the batch to FILE (a new file), "
        "most suspicious films first, with heatmaps",
    )
    parser.add_argument(
        "--no-scope-check",
        action="store_true",
        help="label every film, even one the out-of-scope guard would refuse "
        "(records then say in_scope null, scope_reason 'not checked')",
    )
    parser.add_argument(
        "--list-images",
        action="store_true",
        help="only print the image files found, each ended by a NUL byte (for xargs -0)",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed on one line
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    try:
        if args.list_images:
            list_images(args.images)
            return EXIT_OK
        model = args.model or default_model()
        if model is None:
            return _fail("give --model MODEL.tflite (with its sidecar MODEL.json next to it)")
        return run(
            model,
            args.images,
            args.format,
            args.threads,
            explain_dir=args.explain,
            report_path=args.report,
            check_scope=not args.no_scope_check,
            grid=args.grid,
        )
    except OutputError as err:
        silence_stdout()
        return _fail(str(err))
    except InferenceError as err:
        return _fail(str(err))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other Unix tools do.
        silence_stdout()
        return 1


def _serve(argv) -> int:
    """`infer.py serve ...`: run the DICOM node of node.py, next to this file."""
    try:
        from .node import main as serve_main
    except ImportError:  # this file was copied alone, without its package
        return _fail("serve needs node.py: run the edge_runtime package, as a bundle does")
    return serve_main(argv, default_model=default_model())


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    # Run as `python -m edgexray.edge_runtime.infer`, this file is __main__ while its
    # siblings import it again as the package's infer: run that one, so that both raise
    # and catch the same ImageError.
    try:
        from . import infer as _package_infer
    except ImportError:  # a lone copy run as a script: it has no siblings
        _package_infer = sys.modules[__name__]
    sys.exit(_package_infer.main())
