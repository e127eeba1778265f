"""The one way edgexray turns image files into pneumonia probabilities.

Train, prune and quantize choose thresholds, and evaluate, verify and benchmark apply
them; all of them score through here, so a threshold is chosen on exactly the numbers it
is later applied to. Files are decoded by the edge runtime's own code
(`edge_runtime.preprocess`), a Keras model is called on batches of decoded images,
and a .tflite model runs one image per invoke through `run_interpreter`, as on a
device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgexray.edge_runtime import scope as guard
from edgexray.edge_runtime.errors import ImageError, InferenceError
from edgexray.edge_runtime.interpreter import (
    dequantized,
    interpreter_class,
    load_interpreter,
    run_interpreter,
    sigmoid,
)
from edgexray.edge_runtime.preprocess import normalize, resized_film
from edgexray.errors import EdgexrayError
from edgexray.pipeline import decode_cache

log = logging.getLogger("edgexray")

CHUNK = 64  # images decoded and scored at a time: bounds memory on any data set size
PROGRESS_SECONDS = 5.0  # at most one progress line this often


@dataclass(frozen=True)
class Scorer:
    """A model as a function from decoded images to probabilities, and how to decode."""

    name: str  # for messages: the model file, or what the model is
    input_spec: dict  # what `preprocess` needs: height, width, normalization
    probabilities: Callable[[list[np.ndarray]], np.ndarray]
    # The out-of-scope guard of a model with scope statistics: (model inputs, films as
    # (resized 8-bit grey, load info)) -> one scope.Decision each. None: not judged.
    judge: Callable[[list[np.ndarray], list[tuple]], list] | None = None


def keras_scorer(model, input_spec: dict, name: str = "Keras model") -> Scorer:
    """Score with a tf_keras model, CHUNK images per call, in inference mode."""
    from edgexray.pipeline.model import emits_logit

    logit = emits_logit(model)

    def probabilities(images: list[np.ndarray]) -> np.ndarray:
        result = [
            np.asarray(
                model(np.stack(images[start : start + CHUNK]).astype(np.float32), training=False),
                dtype=np.float64,
            ).reshape(-1)
            for start in range(0, len(images), CHUNK)
        ]
        outputs = np.concatenate(result) if result else np.zeros(0)
        return sigmoid(outputs) if logit else outputs

    return Scorer(name, input_spec, probabilities)


def tflite_scorer(
    model: bytes | Path | object,
    input_spec: dict,
    name: str,
    output_kind: str,
    scope_block: dict | None = None,
) -> Scorer:
    """Score with a .tflite model (its bytes, its file, or a loaded interpreter).

    Exactly `Classifier.probability` after decoding: one image per invoke, input
    quantized and output dequantized as the interpreter's details say, then the sigmoid
    taken when the model emits the logit (output_kind, the sidecar's output "kind").
    With the sidecar's scope block, the scorer also judges every film as the device does
    (`scope.decide` on the features of the film's own invoke).
    """
    if isinstance(model, bytes):
        interpreter = interpreter_class()(model_content=model)
    elif isinstance(model, (str, Path)):
        interpreter = load_interpreter(model)
    else:
        interpreter = model
    interpreter.allocate_tensors()

    def probabilities(images: list[np.ndarray]) -> np.ndarray:
        return np.array([run_interpreter(interpreter, image, output_kind) for image in images])

    statistics = guard.Statistics.of(scope_block) if scope_block is not None else None

    def judge(images: list[np.ndarray], films: list[tuple]) -> list:
        detail = interpreter.get_output_details()[scope_block["feature_output"]["index"]]

        def features_of(gray: np.ndarray) -> np.ndarray:  # of any resized 8-bit film
            run_interpreter(interpreter, normalize(gray, input_spec["normalization"]), output_kind)
            return dequantized(interpreter.get_tensor(detail["index"]), detail)

        decisions = []
        for image, (gray, info) in zip(images, films, strict=True):
            run_interpreter(interpreter, image, output_kind)  # this film's features
            features = dequantized(interpreter.get_tensor(detail["index"]), detail)
            decisions.append(
                guard.decide(
                    gray,
                    features,
                    statistics,
                    colour=info.get("colour"),
                    tags=info.get("tags"),
                    features_of=features_of,
                )
            )
        return decisions

    if scope_block is not None:
        return Scorer(name or "TFLite model", input_spec, probabilities, judge)

    return Scorer(name or "TFLite model", input_spec, probabilities)


def decode(path: str, input_spec: dict, change: Callable | None = None) -> np.ndarray:
    """The model input for one file, as `preprocess` makes it; `change` alters the
    resized grayscale image first (the shift stress test's acquisition changes). The
    resized image comes from the decode cache (see pipeline/decode_cache.py)."""
    gray = decode_cache.resized_grayscale(path, input_spec)
    if change is not None:
        gray = change(gray)
    return normalize(gray, input_spec["normalization"])


def decode_film(path: str, input_spec: dict, change: Callable | None = None) -> tuple:
    """The model input for one file, and the film as the scope guard sees it:
    (input, (resized 8-bit grey, load info)). Not cached: the guard needs what the decoder
    found in the file (its colour, its DICOM tags), which the decode cache does not keep."""
    gray, info = resized_film(path, input_spec)
    if change is not None:
        gray = change(gray)
    return normalize(gray, input_spec["normalization"]), (gray, info)


def _spec_key(input_spec: dict) -> tuple:
    """The fields `preprocess` reads: models that share them share decoded inputs."""
    try:
        return (int(input_spec["height"]), int(input_spec["width"]), input_spec["normalization"])
    except (KeyError, TypeError, ValueError) as err:
        raise EdgexrayError(f"input spec lacks height, width or normalization ({err})") from None


@dataclass(frozen=True)
class Scores:
    """What scoring read: the readable files in the order given, their labels, every
    model's probabilities for them, and the files it could not read with why.

    Every array is parallel to `paths`, so callers use the readable set as it is and never
    re-filter; a new per-film field (a scope flag...) is one more array here.
    """

    paths: list[str]  # the readable files
    probabilities: np.ndarray  # (models, len(paths)): one row per scorer, in the order given
    labels: np.ndarray | None = None  # of the readable files, when labels were given
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable file -> why
    # (models, len(paths)): 1.0 in scope, 0.0 out of scope (the device would label the film
    # OUT_OF_SCOPE), NaN not judged (a model without scope statistics, a Keras model).
    in_scope: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)


def _skip(path: str, err: Exception) -> str:
    """Why a file was skipped (the warning says it too), without repeating its path."""
    reason = str(err)
    return reason[len(f"{path}: ") :] if reason.startswith(f"{path}: ") else reason


def score(
    scorers: list[Scorer], paths: list[str], labels=None, change: Callable | None = None
) -> Scores:
    """Pneumonia probabilities of every model for every readable file, decoding each once.

    Args:
        labels: the files' labels (1 = pneumonia), carried over to the readable set.
        change: alters each resized grayscale image before normalization (see `decode`).

    Returns:
        The readable set; a file that cannot be read is in `skipped` (a warning names it).

    Raises:
        EdgexrayError: a model cannot run on its input (e.g. unknown normalization).
    """
    specs = {_spec_key(s.input_spec): s.input_spec for s in scorers}
    result = np.full((len(scorers), len(paths)), np.nan)
    in_scope = np.full((len(scorers), len(paths)), np.nan)
    judging = any(scorer.judge is not None for scorer in scorers)
    skipped: dict[str, str] = {}
    started = last_log = time.monotonic()
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start : start + CHUNK]
        inputs = {key: [] for key in specs}
        films = {key: [] for key in specs}
        readable = []
        for offset, path in enumerate(chunk):
            try:
                decoded = {
                    key: decode_film(path, spec, change)
                    if judging
                    else (decode(path, spec, change), None)
                    for key, spec in specs.items()
                }
            except ImageError as err:
                log.warning("skipping %s", err)
                skipped[path] = _skip(path, err)
                continue
            except InferenceError as err:  # the model's sidecar, not the image, is wrong
                raise EdgexrayError(str(err)) from None
            except Exception as err:  # noqa: BLE001 - odd files must not stop a long run
                log.warning("skipping %s: not a readable image (%s)", path, err)
                skipped[path] = f"not a readable image ({err})"
                continue
            readable.append(start + offset)
            for key, (image, film) in decoded.items():
                inputs[key].append(image)
                films[key].append(film)
        if readable:
            for row, scorer in enumerate(scorers):
                key = _spec_key(scorer.input_spec)
                try:
                    result[row, readable] = scorer.probabilities(inputs[key])
                    if scorer.judge is not None:
                        in_scope[row, readable] = [
                            np.nan if d.in_scope is None else float(d.in_scope)
                            for d in scorer.judge(inputs[key], films[key])
                        ]
                except (ValueError, RuntimeError) as err:  # shape or dtype the model refuses
                    raise EdgexrayError(f"{scorer.name}: cannot run on its input ({err})") from None
                except InferenceError as err:  # an output that is no probability
                    raise EdgexrayError(f"{scorer.name}: {err}") from None
        done = start + len(chunk)
        now = time.monotonic()
        if now - last_log >= PROGRESS_SECONDS and done < len(paths):
            log.info("scored %d/%d images (%.0f s)", done, len(paths), now - started)
            last_log = now
    log.debug(
        "scored %d images with %d model(s) in %.1f s",
        len(paths),
        len(scorers),
        time.monotonic() - started,
    )
    keep = np.array([p not in skipped for p in paths], dtype=bool)
    return Scores(
        paths=[p for p, ok in zip(paths, keep, strict=True) if ok],
        probabilities=result[:, keep],
        labels=None if labels is None else np.asarray(labels)[keep],
        skipped=skipped,
        in_scope=in_scope[:, keep],
    )


def probabilities_of(scorer: Scorer, paths: list[str], change: Callable | None = None):
    """One model's probabilities for files that must all be readable (a run's split).

    Raises:
        EdgexrayError: a file of the split can no longer be read.
    """
    scores = score([scorer], paths, change=change)
    if scores.skipped:
        raise EdgexrayError(
            f"{len(scores.skipped)} image(s) of the split became unreadable since the data "
            "was scanned"
        )
    return scores.probabilities[0]


def keras_probabilities(model, paths: list[str], input_spec: dict, change=None) -> np.ndarray:
    """Probabilities of an in-memory Keras model for a run's (readable) image files."""
    return probabilities_of(keras_scorer(model, input_spec), paths, change)
