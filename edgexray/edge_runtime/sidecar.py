"""The sidecar: what a model file needs to be fed and read, and its checks.

Written by the host next to every .tflite it exports (`edgexray.export.convert`), read by
everything that runs a model. A sidecar that would silently mislead (labels in another
order, a threshold that is no probability, an output kind that does not describe the
model, a sha256 of another file) is refused with the reason, never half-used.
The shapes below are the sidecar's written form: look a field up through them, not by
guessing its key.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TypedDict

from . import scope
from .errors import InferenceError
from .preprocess import NORMALIZATIONS

SIDECAR_SCHEMA = "edgexray.sidecar/1"
SIDECAR_FIELDS = ("model_file", "sha256", "labels", "input", "output", "threshold")
INPUT_FIELDS = ("height", "width", "normalization")
# The classes in the order edgexray trains them: index = model target, so the one output
# value speaks of LABELS[1]. Training, the host's gate and every sidecar use this table;
# a sidecar naming other classes, or these in another order, would print pneumonia as
# NORMAL, so it is refused.
LABELS = ("NORMAL", "PNEUMONIA")
POSITIVE_LABEL = LABELS[1]
# What the model's one output value is: "logit" (edgexray 0.2 on: the host takes the
# sigmoid, so a uint8 output keeps its resolution) or "probability" (sigmoid in the model).
# A sidecar must say which: read the wrong way, a logit of 4.3 would be "probability" 4.3.
OUTPUT_KINDS = ("logit", "probability")
# Labels end up in labels.txt, CSV headers and the Android README's Kotlin strings: plain
# names only, so no newline or quote can break any of them.
LABEL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9 _-]{0,31}")


class Quantization(TypedDict):
    scale: float
    zero_point: int


class InputSpec(TypedDict, total=False):
    """How a film becomes the model's input (`preprocess`), and the input tensor."""

    height: int
    width: int
    channels: int
    color: str
    resize: str
    normalization: str  # one of preprocess.NORMALIZATIONS
    value_range: list[float]
    layout: str
    name: str
    shape: list[int]
    dtype: str
    quantization: Quantization


class OutputSpec(TypedDict, total=False):
    """The output tensor, and what its one value is (OUTPUT_KINDS)."""

    name: str
    shape: list[int]
    dtype: str
    quantization: Quantization
    kind: str
    meaning: str


class CalibrationBlock(TypedDict, total=False):
    """A site calibration's threshold and what it promises (edgexray calibrate)."""

    schema: str
    edgexray_version: str
    calibrated_at: str
    method: str
    guarantee: bool
    target_recall: float
    confidence: float
    misses_allowed: int
    threshold: float
    source_threshold: float
    source_target_recall: float | None
    source_sidecar_sha256: str
    sample: dict
    recall_lower_bound: float | None
    expected_specificity: float | None
    expected_specificity_ci: list[float] | None
    interval: str
    in_sample: dict
    uncalibrated: dict
    cross_validation: dict
    empirical: dict | None
    prevalence: dict | None


class Sidecar(TypedDict, total=False):
    """A model's sidecar (SIDECAR_SCHEMA); SIDECAR_FIELDS are always there."""

    schema: str
    edgexray_version: str
    model_file: str
    sha256: str
    method: str
    method_config: dict
    labels: list[str]
    positive_label: str
    input: InputSpec
    output: OutputSpec
    threshold: float
    target_recall: float
    sparsity: float
    scope: scope.ScopeBlock | None
    calibration: CalibrationBlock


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_sidecar(model_path: str | Path) -> Sidecar:
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


def _sidecar_problem(sidecar: Sidecar) -> str | None:
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
    if spec["normalization"] not in NORMALIZATIONS:
        return f"unknown input.normalization {spec['normalization']!r}"
    output = sidecar["output"]
    if not isinstance(output, dict) or output.get("kind") not in OUTPUT_KINDS:
        return f"output.kind must be one of {', '.join(OUTPUT_KINDS)} (what the output value is)"
    if sidecar.get("scope") is not None:
        return scope.problem(sidecar["scope"])
    return None
