"""The sidecar: what a model file needs to be fed and read, and its checks.

A model carries its sidecar inside, as the associated file edgexray.json (see
`metadata`); the X.json beside X.tflite is a readable copy, written with it. Everything
that runs a model reads it here. A sidecar that would silently mislead (labels in another
order, a threshold that is no probability, an output kind that does not describe the
model, the sha256 of another model, a copy beside the model that says something else) is
refused with the reason, never half-used.
The shapes below are the sidecar's written form: look a field up through them, not by
guessing its key.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import TypedDict

from . import metadata, scope
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
    """The sha256 of a whole file (checksums, films); a model's identity is
    `metadata.identity`, which leaves out its associated files."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_path(model_path: str | Path) -> Path:
    """Where a model's readable sidecar copy sits: X.json beside X.tflite."""
    return Path(model_path).with_suffix(".json")


def load_sidecar(model_path: str | Path) -> Sidecar:
    """The sidecar inside model.tflite (or, for a model written before models carried it,
    model.json beside it), checked as a whole and against the model.

    Raises:
        InferenceError: a missing model or sidecar, missing fields, a copy beside the model
            that disagrees with the one inside (naming the fields), or a sha256 that is
            not this model's.
    """
    model_path = Path(model_path)
    if not model_path.is_file():
        raise InferenceError(f"model not found: {model_path}")
    model = metadata.read(model_path)
    beside = copy_path(model_path)
    if model.sidecar_bytes is not None:
        where = f"{model_path} ({metadata.SIDECAR_FILE} inside)"
        sidecar = _parse(model.sidecar_bytes, where)
        if beside.exists():
            _check_copy(sidecar, beside, model_path)
    else:
        where = str(beside)
        try:
            sidecar = _parse(beside.read_bytes(), where)
        except FileNotFoundError:
            raise InferenceError(
                f"{model_path} carries no edgexray metadata and has no sidecar "
                f"{beside.name} beside it (it says how to feed the model)"
            ) from None
        except OSError as err:
            raise InferenceError(f"{beside}: cannot read it ({err.strerror or err})") from None
    _check_fields(sidecar, where)
    problem = _sidecar_problem(sidecar)
    if problem:
        raise InferenceError(f"{where}: {problem}")
    labels = model.files.get(metadata.LABELS_FILE)
    if labels is not None and labels != metadata.labels_text(sidecar).encode():
        raise InferenceError(
            f"{model_path}: its {metadata.LABELS_FILE} does not name {sidecar['labels'][1]}, "
            "the class its output speaks of"
        )
    if model.sha256 != sidecar["sha256"]:
        raise InferenceError(
            f"{model_path} does not match its sidecar (sha256 differs): the model or the "
            "sidecar was replaced"
        )
    return sidecar


def _parse(text: bytes, where: str) -> dict:
    try:
        sidecar = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InferenceError(f"{where}: not valid JSON ({err})") from None
    except RecursionError:  # json recurses once per level of nesting
        raise InferenceError(f"{where}: JSON nested too deeply") from None
    if not isinstance(sidecar, dict):
        raise InferenceError(f"{where}: not a JSON object")
    return sidecar


def _check_fields(sidecar: dict, where: str) -> None:
    missing = [f for f in SIDECAR_FIELDS if f not in sidecar]
    if not missing:
        spec = sidecar["input"]
        missing = [
            f"input.{f}" for f in INPUT_FIELDS if not isinstance(spec, dict) or f not in spec
        ]
    if missing:
        raise InferenceError(f"{where}: missing fields {', '.join(missing)}")


def _check_copy(sidecar: dict, beside: Path, model_path: Path) -> None:
    """Refuse a readable copy that says something else than the sidecar inside: a stale or
    edited X.json would show one threshold and the device run with another."""
    try:
        copy = _parse(beside.read_bytes(), str(beside))
    except OSError as err:
        raise InferenceError(f"{beside}: cannot read it ({err.strerror or err})") from None
    fields = differences(sidecar, copy)
    if fields:
        shown = ", ".join(fields[:MAX_FIELDS_NAMED])
        more = (
            f" and {len(fields) - MAX_FIELDS_NAMED} more" if len(fields) > MAX_FIELDS_NAMED else ""
        )
        raise InferenceError(
            f"{beside} disagrees with the sidecar inside {model_path.name} ({shown}{more}): "
            f"it is only a readable copy; delete it, or write it again with `unzip -p "
            f"{model_path.name} {metadata.SIDECAR_FILE} > {beside.name}`"
        )


MAX_FIELDS_NAMED = 6  # an error line names this many differing fields, then counts


def differences(sidecar: dict, other: dict, prefix: str = "") -> list[str]:
    """The dotted names of the fields whose values differ (a list or a value that is not
    an object is one field), in the first sidecar's order, then the other's extras."""
    found = []
    for key in list(sidecar) + [k for k in other if k not in sidecar]:
        name = f"{prefix}{key}"
        mine, theirs = sidecar.get(key, _ABSENT), other.get(key, _ABSENT)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            found += differences(mine, theirs, f"{name}.")
        elif mine != theirs:
            found.append(name)
    return found


_ABSENT = object()


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
