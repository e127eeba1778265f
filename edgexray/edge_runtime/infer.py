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
SIDECAR_SCHEMA = "edgexray.sidecar/1"
SIDECAR_FIELDS = ("model_file", "sha256", "labels", "input", "output", "threshold")


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


def run_interpreter(interpreter, image: np.ndarray) -> float:
    """Run one float image (H, W, 1) in [0, 1] and return the pneumonia probability.

    Quantized models get their input quantized and their output dequantized with the
    scale and zero-point the interpreter reports for those tensors.
    """
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    batch = image[np.newaxis].astype(np.float32)
    scale, zero_point = input_detail["quantization"]
    if np.issubdtype(input_detail["dtype"], np.integer):
        info = np.iinfo(input_detail["dtype"])
        batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
    interpreter.set_tensor(input_detail["index"], batch.astype(input_detail["dtype"]))
    interpreter.invoke()
    output = interpreter.get_tensor(output_detail["index"]).astype(np.float64).reshape(-1)
    scale, zero_point = output_detail["quantization"]
    if np.issubdtype(output_detail["dtype"], np.integer):
        output = (output - zero_point) * scale
    return float(output[0])


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
        raise InferenceError(f"sidecar not found: {sidecar_path} (it says how to feed the model)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InferenceError(f"{sidecar_path}: not valid JSON ({err})") from None
    missing = [f for f in SIDECAR_FIELDS if not isinstance(sidecar, dict) or f not in sidecar]
    if missing:
        raise InferenceError(f"{sidecar_path}: missing fields {', '.join(missing)}")
    if sha256_of(model_path) != sidecar["sha256"]:
        raise InferenceError(
            f"{model_path.name} does not match its sidecar (sha256 differs): "
            "the model or the sidecar was replaced"
        )
    return sidecar


class Classifier:
    """A .tflite pneumonia model fed exactly as its sidecar says."""

    def __init__(self, model_path: str | Path, threads: int | None = None):
        self.sidecar = load_sidecar(model_path)
        self.interpreter = load_interpreter(model_path, threads)
        try:
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            raise InferenceError(f"{model_path}: cannot allocate tensors ({err})") from None
        self.threshold = float(self.sidecar["threshold"])

    def probability(self, path: str | Path) -> float:
        """Pneumonia probability of one image file (raises ImageError if unreadable)."""
        return run_interpreter(self.interpreter, preprocess(path, self.sidecar["input"]))
