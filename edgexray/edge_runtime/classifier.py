"""The classifier: a .tflite pneumonia model fed exactly as its sidecar says, and the
record it gives for each film."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import readers, scope
from .errors import ImageError, InferenceError
from .interpreter import (
    dequantized,
    input_batch,
    invoke,
    levels_are_input,
    load_interpreter,
    output_range_problem,
    to_probability,
)
from .preprocess import equalize, fit, normalize, quality_warning, resized_grayscale
from .readers.identity import identity
from .sidecar import load_sidecar


@dataclass
class Classified:
    """One film through the classifier: its record, and the film as read (None when it
    could not be read) with what its reader said of it (info: rendering, DICOM tags...).

    The film travels with the record so that a heatmap or a report shows the very film
    that was classified: the record's path is only a display name (a file name that is
    not UTF-8 is escaped there), never opened again.
    """

    record: dict
    film: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    resized: np.ndarray | None = None  # the film at the model's input size, 8-bit


class Classifier:
    """A .tflite pneumonia model fed exactly as its sidecar says.

    Output 0 is the pneumonia logit (or probability); a model with scope statistics has
    its pooled features as another output, named by the sidecar's scope block. With
    check_scope (the default) every record says whether the film is in scope.
    """

    def __init__(
        self, model_path: str | Path | None = None, threads: int | None = None, check_scope=True
    ):
        if model_path is None:  # the model shipped with edgexray (none in a bundle)
            from . import REFERENCE_MODEL as model_path
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
        self.scope_statistics = None
        if self.scope is not None:
            found = scope.problem(self.scope, [int(np.prod(o["shape"])) for o in outputs])
            if found:
                raise InferenceError(f"{model_path}: {found}")
            self.scope_statistics = scope.Statistics.of(self.scope)
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
            gray,
            self.features(),
            self.scope_statistics,
            colour=info.get("colour"),
            tags=info.get("tags"),
            features_of=self.features_of,
        )

    def features_of(self, gray: np.ndarray) -> np.ndarray | None:
        """The pooled features of a resized 8-bit film (one more run of the model)."""
        self.run(self.tensor_of(gray))
        return self.features()

    def classify(self, film, name: str | None = None) -> dict:
        """One record: path, the film's identity when it has one (readers.identity:
        patient, study and UIDs of a DICOM film), probability, label, threshold,
        latency_ms, rendering, in_scope, scope_reason (and scope_distance when measured);
        or path and error.

        film is a file's path, or a film held in memory: a numpy array (2-D grey levels,
        8 or 16 bits, or height x width x 3 colour), a PIL image or a pydicom Dataset
        (`readers.read`). The record's path is name, else the path or a name of the kind.

        A film out of scope gets the label OUT_OF_SCOPE: its probability is recorded but
        not turned into NORMAL or PNEUMONIA. latency_ms covers reading, preprocessing,
        the interpreter call and the scope check. A flat or blank image also gets
        quality_warning (see `preprocess.quality_warning`).
        """
        return self.classify_film(film, name).record

    def classify_film(self, source, name: str | None = None) -> Classified:
        """`classify`, with the film as read."""
        started = time.perf_counter()
        shown = display_name(source) if name is None else name
        try:
            film, info = readers.read(source)
        except ImageError as err:
            where = str(source) if isinstance(source, (str, Path)) else shown
            record = {
                "path": clean_text(shown),
                "error": clean_text(str(err).replace(f"{where}: ", "", 1)),
            }
            return Classified(record)
        gray = fit(film, info, self.sidecar["input"])
        probability = self.run(self.tensor_of(gray))
        decision = self.scope_decision(gray, info)
        label = self.labels[1] if probability >= self.threshold else self.labels[0]
        record = {
            "path": clean_text(shown),
            **{k: clean_text(v) for k, v in identity(info.get("tags")).items()},
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
        return Classified(record, film, info, gray)


def display_name(source) -> str:
    """What a record calls a film: its path, or for a film held in memory its file name
    when it has one, else the kind of thing it is (array, image, DICOM dataset)."""
    if isinstance(source, (str, Path)):
        return str(source)
    filename = getattr(source, "filename", None)
    if filename:
        return str(filename)
    if type(source).__module__.split(".")[0] == "pydicom":
        return f"DICOM dataset {source.get('SOPInstanceUID', '')}".strip()
    return "array" if type(source).__module__ == "numpy" else "image"


def clean_text(text: str) -> str:
    """text as valid Unicode for a record: the bytes of a file name that are not UTF-8
    (which Python reads as lone surrogates, written to JSON as \\udce9) become \\xe9."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name makes
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
