"""Standalone pneumonia inference for a chest X-ray .tflite model and its JSON sidecar.

This one file is copied to the device. It needs only the standard library, numpy,
Pillow and a TFLite interpreter (ai-edge-litert, else tflite-runtime, else
tensorflow.lite); it must never import edgexray or TensorFlow when a lighter runtime
is present. edgexray itself imports the preprocessing from here, so what is trained,
verified and shipped is preprocessed by the same code.

It is also the one home of the image-discovery rule (`is_image_file`, `image_files`):
edgexray's data loading, evaluation and `predict` call it, and the bundle's watch-folder
script asks it with `--list-images`, so every reader agrees on what is a film.

Command line (exit 0 when every image was read, 3 when some were not, 2 for bad
arguments, a missing, corrupt or mismatched model, or results that could not be written):

    python infer.py --model model.tflite IMAGE_OR_DIR [...] [--format jsonl|csv] [--threads N]
    python infer.py --list-images IMAGE_OR_DIR [...]

It stays one file, over the usual module size, on purpose: it is copied alone to devices.
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

# Larger images are refused as decompression bombs. Real chest films are at most about
# 4500 x 4500 pixels; 50 megapixels leaves room and still bounds memory.
MAX_PIXELS = 50_000_000
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
# Only the formats the project documents are decoded: Pillow would otherwise hand a
# PostScript file named .jpg to Ghostscript, or read a TIFF nobody validated.
IMAGE_FORMATS = ("JPEG", "PNG")
# Labels end up in labels.txt, CSV headers and the Android README's Kotlin strings: plain
# names only, so no newline or quote can break any of them.
# What the model's one output value is: "logit" (edgexray 0.2 on: the host takes the
# sigmoid, so a uint8 output keeps its resolution) or "probability" (sigmoid in the model;
# also what a sidecar without "kind" means).
OUTPUT_KINDS = ("logit", "probability")
LABEL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9 _-]{0,31}")
# A film spreads over many grey levels: 300 random films of the Kaggle set, resized to
# 128 x 128, all had a standard deviation of at least 28 and at least 143 levels. Below
# these bounds the image is blank, flat or a two-tone drawing and the model's probability
# means nothing; the record says so instead of staying silent.
FLAT_STD = 10.0
FLAT_LEVELS = 32
MAX_THREADS = 64  # far above any device's cores; huge values crash the interpreter
SIDECAR_SCHEMA = "edgexray.sidecar/1"
SIDECAR_FIELDS = ("model_file", "sha256", "labels", "input", "output", "threshold")
INPUT_FIELDS = ("height", "width", "normalization")
RECORD_FIELDS = (
    "path", "probability", "label", "threshold", "latency_ms", "error", "quality_warning",
)  # fmt: skip
FORMATS = ("jsonl", "csv")
EXIT_OK, EXIT_BAD_INPUT, EXIT_UNREADABLE = 0, 2, 3


class InferenceError(Exception):
    """A problem with the model, its sidecar or the arguments (exit code 2)."""


class ImageError(Exception):
    """One image could not be read; the run goes on with the others."""


# --- preprocessing: the single source of truth for training, evaluation and devices ---


def is_image_file(path: str | Path) -> bool:
    """The one rule for what is a film: a regular file (not a FIFO, device or folder) with
    a .jpeg/.jpg/.png suffix in any case, and not hidden (macOS "._x.jpeg" resource forks
    and rsync's half-copied temporaries start with a dot)."""
    path = Path(path)
    name = path.name
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES) and path.is_file()


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
    """Read a JPEG or PNG file as an 8-bit grayscale array, upright as the EXIF tag says.

    Raises:
        ImageError: the file is missing, not a regular file, not a JPEG or PNG,
            truncated or too large.
    """
    try:
        # Pillow's own bomb guard only warns below twice its limit; make it an error too.
        with warnings.catch_warnings(), _open_regular(path) as handle:
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(handle, formats=IMAGE_FORMATS) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageError(_bomb_message(path, width, height, max_pixels))
                image.load()  # decode now, so a truncated file fails here
                # In place: a film is megabytes, and every copy counts on a small device.
                # Pillow 9.4 (Debian Bookworm's, the 32-bit Pi's) has no in_place: a copy.
                if EXIF_IN_PLACE:
                    ImageOps.exif_transpose(image, in_place=True)
                else:
                    image = ImageOps.exif_transpose(image)
                return _to_uint8_gray(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"{path}: refused as a possible decompression bomb ({err})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not a JPEG or PNG image") from None
    except Exception as err:  # Pillow raises many types for malformed files
        raise ImageError(f"{path}: not a readable image ({err})") from None


def _bomb_message(path, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{path}: {width}x{height} pixels is over the {max_pixels} limit "
        "(refused as a possible decompression bomb)"
    )


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
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


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
    return resize(load_grayscale(path), int(input_spec["height"]), int(input_spec["width"]))


def preprocess(path: str | Path, input_spec: dict) -> np.ndarray:
    """Read an image file and return the model input (height, width, 1) as float32."""
    return normalize(resized_grayscale(path, input_spec), input_spec["normalization"])


def quality_warning(gray: np.ndarray) -> str | None:
    """Why a resized 8-bit image does not look like a film (blank, flat), or None.

    Equalisation stretches even a blank image to full contrast, so the model answers
    with confidence; this is the one place that notices the image had nothing in it.
    """
    levels = int(np.count_nonzero(np.bincount(gray.ravel(), minlength=256)))
    spread = float(gray.std())
    if spread < FLAT_STD or levels < FLAT_LEVELS:
        return (
            f"flat or blank image (grey-level standard deviation {spread:.1f}, "
            f"{levels} grey levels): the probability is not meaningful"
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


def run_interpreter(interpreter, image: np.ndarray, output_kind: str = "probability") -> float:
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
    """The pneumonia probability from the model's dequantized output (OUTPUT_KINDS)."""
    return float(sigmoid(output)) if output_kind == "logit" else output


def invoke(interpreter, batch: np.ndarray, input_detail: dict, output_detail: dict) -> float:
    """Run one ready input tensor (1, H, W, 1) and return its dequantized output."""
    interpreter.set_tensor(input_detail["index"], batch)
    interpreter.invoke()
    output = float(interpreter.get_tensor(output_detail["index"]).reshape(-1)[0])
    if np.issubdtype(output_detail["dtype"], np.integer):
        scale, zero_point = output_detail["quantization"]
        output = (output - zero_point) * scale
    return output


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
    """What makes a sidecar unusable, or None. A wrong threshold or label order would not
    crash: it would silently call pneumonia normal, so both are checked."""
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
    if sidecar.get("positive_label", labels[1]) != labels[1]:
        return f"positive_label {sidecar['positive_label']!r} is not the second label"
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
    if not isinstance(output, dict) or output.get("kind", "probability") not in OUTPUT_KINDS:
        return f"output.kind must be one of {', '.join(OUTPUT_KINDS)}"
    return None


class Classifier:
    """A .tflite pneumonia model fed exactly as its sidecar says."""

    def __init__(self, model_path: str | Path, threads: int | None = None):
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
        if len(outputs) != 1 or int(np.prod(outputs[0]["shape"])) != 1:
            # One sigmoid unit is the pneumonia probability; a two-class softmax read the
            # same way would silently return the probability of NORMAL.
            raise InferenceError(f"{model_path}: expected one output value")
        self.threshold = float(self.sidecar["threshold"])
        self.labels = [str(label) for label in self.sidecar["labels"]]
        self.output_kind = self.sidecar["output"].get("kind", "probability")
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

    def classify(self, path: str | Path) -> dict:
        """One record: path, probability, label, threshold, latency_ms; or path and error.

        latency_ms covers reading, preprocessing and the interpreter call.
        A flat or blank image also gets quality_warning (see `quality_warning`).
        """
        started = time.perf_counter()
        spec = self.sidecar["input"]
        try:
            gray = resized_grayscale(path, spec)
        except ImageError as err:
            return {"path": str(path), "error": str(err).replace(f"{path}: ", "", 1)}
        probability = self.run(self.tensor_of(gray))
        record = {
            "path": str(path),
            "probability": probability,
            "label": self.labels[1] if probability >= self.threshold else self.labels[0],
            "threshold": self.threshold,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 3),
        }
        warning = quality_warning(gray)
        if warning:
            record["quality_warning"] = warning
        return record


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


def write_records(records, stream, fmt: str = "jsonl") -> int:
    """Write each record as soon as it is ready (jsonl or csv); return how many had errors.

    Raises:
        OutputError: a write or flush failed; what was not flushed is lost, so the caller
            must not treat those images as done.
        BrokenPipeError: the reader went away.
    """
    writer = csv.DictWriter(stream, RECORD_FIELDS, lineterminator="\n") if fmt == "csv" else None
    if writer:
        _emit(stream, writer.writerow, {field: field for field in RECORD_FIELDS})  # header
    errors = 0
    for record in records:
        errors += "error" in record
        if writer:
            _emit(stream, writer.writerow, record)
        else:
            _emit(stream, stream.write, json.dumps(record) + "\n")
    return errors


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
    model_path: str | Path, inputs, fmt: str = "jsonl", threads: int | None = None, stream=None
) -> int:
    """Classify every image in inputs (files or folders), one record per image on stream.

    Returns:
        EXIT_OK when every image was read, EXIT_UNREADABLE when some were not.

    Raises:
        InferenceError: a bad format or thread count, no images at all, or a missing,
            corrupt or mismatched model.
        OutputError: the records could not be written.
    """
    if fmt not in FORMATS:
        raise InferenceError(f"unknown format {fmt!r}: choose {' or '.join(FORMATS)}")
    check_threads(threads)
    classifier = Classifier(model_path, threads)
    paths = find_images(inputs)
    if not paths:
        raise InferenceError(f"no images found in {', '.join(map(str, inputs))}")
    errors = write_records(map(classifier.classify, paths), stream or sys.stdout, fmt)
    return EXIT_UNREADABLE if errors else EXIT_OK


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
    """The .tflite next to this script when there is exactly one (as in a bundle)."""
    models = sorted(Path(__file__).resolve().parent.glob("*.tflite"))
    return models[0] if len(models) == 1 else None


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see --help)\n")


def main(argv=None) -> int:
    """Run the command line; return the exit code instead of exiting."""
    parser = _Parser(
        prog=Path(sys.argv[0]).name if argv is None else "infer.py",
        description="Pneumonia probability of chest X-ray images with a .tflite model and "
        "its JSON sidecar. Prints one record per image.",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE_OR_DIR",
        help="image files, or folders walked for .jpeg/.jpg/.png",
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
        return run(model, args.images, args.format, args.threads)
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


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
