"""The out-of-scope guard: is this image a frontal chest film like the ones the model knows?

Worse than a missed pneumonia is a confident answer to a question the model was never
trained on: a negative (an inverted film), a knee, a CT slice, a photograph. Such an
image must get the label OUT_OF_SCOPE, never NORMAL or PNEUMONIA. `decide` is the one
home of that rule; the classifier applies it to every film, and the Android bundle's
EdgexrayScope.java is its port (tests/export/test_android_scope.py holds them to the same answers).

The checks, cheapest and most certain first (the first that fails is the reason):
1. DICOM tags, when the film came with them (`TAG_RULES`, a table of facts): not a
   radiograph, not a chest, not a frontal view, or a patient outside the trained ages.
2. Colour: chest films are grey (or one tint, when scanned in colour); a photograph has
   many hues (`COLOUR_LIMIT`).
3. Flat or blank: too few grey levels to be a film (`FLAT_STD`, `FLAT_LEVELS`).
4. Content: the Mahalanobis distance of the model's own pooled features (its second
   output) from the training films' distribution, against a cut-off chosen on the val
   split (the sidecar's `scope` block, see edgexray/pipeline/scope.py). This is what
   catches inverted films, other body parts, CT/MR slices and grey photographs, on JPEG
   and PNG as well as DICOM. The block has one of two forms (SCOPE_SCHEMAS): the full
   covariance (a few hundred features at most), or, for a wide backbone (EfficientNet's
   1280), its leading principal components with the other directions sharing one
   variance, which keeps the block a k x 1280 matrix instead of 1280 x 1280.

A model whose sidecar has no scope block still gets checks 1-3, but passing them is not
"in scope": the decision is None ("model has no scope statistics").

numpy only: this folder is shipped to devices and imports nothing from edgexray.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

SCOPE_SCHEMA = "edgexray.scope/1"  # full covariance: distance = |W (f - mean)|
SUBSPACE_SCHEMA = "edgexray.scope/2"  # leading components, and the rest as one variance
# Each form and the fields its distance reads besides mean, whitening and cutoff. A
# runtime that knows only the first refuses the second (its distance would miss the
# residual term and let unlike films through), so the form is in the schema string.
SCOPE_SCHEMAS = {
    SCOPE_SCHEMA: (),
    SUBSPACE_SCHEMA: ("component_variances", "residual_variance"),
}
OUT_OF_SCOPE = "OUT_OF_SCOPE"  # the label of every film the guard refuses
NOT_CHECKED = "not checked"  # --no-scope-check
NO_STATISTICS = "model has no scope statistics"
IN_SCOPE = "in scope"

# A film spreads over many grey levels: 300 random films of the Kaggle set, resized to
# 128 x 128, all had a standard deviation of at least 28 and at least 143 levels. Below
# these bounds the image is blank, flat or a two-tone drawing.
FLAT_STD = 10.0
FLAT_LEVELS = 32
# Mean distance of the pixels' chroma from the image's one tint, in grey levels (see
# `colour_spread`). Measured: every test/ film 0.0 (saved as RGB with equal channels), a
# film tinted in colour (R, 0.9 G, 0.8 B, or a sepia curve) and saved as JPEG 0.85-1.2;
# the colour photographs bundled with scikit-image 4.1 (rocket) to 53, matplotlib's
# grace_hopper 34.5. 2.5 sits between the two groups.
COLOUR_LIMIT = 2.5
# The colour is measured on every step-th pixel of every step-th row, step chosen so the
# longer side gives at most this many samples: a 4000-pixel photograph costs no more
# than a 256-pixel one (EdgexrayScope.java samples the same pixels).
COLOUR_SAMPLE = 256


@dataclass(frozen=True)
class TagRule:
    """One DICOM attribute and the values a film the model can read may have.

    An empty or missing value, or one of `silent`, says nothing about the film (many
    exports leave optional tags out), so it passes; the content check still runs.
    """

    tag: str
    accepted: tuple[str, ...]
    why: str
    silent: tuple[str, ...] = ()


# Modality: CR (computed radiography), DX (digital radiography) and RG (radiographic
# film, digitised) are projection radiographs; CT, MR, US, NM, MG and every other modality
# are not what the model was trained on. OT ("other") is what secondary captures carry (a
# film digitiser, a PACS re-export): it says nothing either way, so the content decides.
# BodyPartExamined: CHEST is the DICOM term; THORAX is what some units write instead.
# ViewPosition: the training films are frontal (AP, some PA); a lateral view (LL, RL)
# is a different picture of the same chest.
TAG_RULES = (
    TagRule("Modality", ("CR", "DX", "RG"), "is not a projection radiograph", ("OT",)),
    TagRule("BodyPartExamined", ("CHEST", "THORAX"), "is not a chest"),
    TagRule("ViewPosition", ("PA", "AP"), "is not a frontal view"),
)
# PatientAge is nnnD, nnnW, nnnM or nnnY (DICOM AS value representation).
AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
# PatientAge is rounded down to whole units, and a study date may be the day after the
# acquisition: a year apart is still the same child.
AGE_DISAGREEMENT = 1.0


class FeatureOutput(TypedDict):
    index: int  # the model output holding the pooled features (output 0 is the logit)
    name: str
    size: int


class ScopeBlock(TypedDict, total=False):
    """A sidecar's scope block (SCOPE_SCHEMA), fitted by edgexray/pipeline/scope.py."""

    schema: str
    feature_output: FeatureOutput
    method: str
    mean: list[float]
    whitening: list[list[float]]  # W: precision W^T W (scope/1), or k scaled components
    shrinkage: float  # scope/1
    component_variances: list[float]  # scope/2: the variance along each row of W
    residual_variance: float  # scope/2: the variance of every other direction
    cutoff: float
    patient_age_years: dict | None  # {"min": years, "max": years, "source": ...}
    cutoff_rule: str
    coverage: float
    fitted_on: dict
    chosen_on: dict
    orientation: dict | None  # {"turns": [TURNS names], "margin": distance, "chosen_on": ...}


@dataclass(frozen=True)
class Turn:
    """A way a film can arrive changed from the films the model was trained on, which
    undoing it shows: turned upside down, or as its negative."""

    name: str
    looks: str  # how the film looks, for the record's reason
    apply: Callable[[np.ndarray], np.ndarray]  # the change, on a 2-D 8-bit film; its own inverse
    undone: str  # "turned back": the film with the change undone, in the reason
    advice: str  # what the sender should do


# Films arrive upside down (a film put in the reader the wrong way, a detector mis-set).
# Of 30 normal films turned so, 14 were once called PNEUMONIA in scope. A change whose
# inverse brings the film closer to the training films (as the model sees them) by more
# than the block's margin is refused (`decide`). A quarter turn needs no check of its own:
# its features are far from the training films' for every val and test/ film. A mirrored
# film is not checked: its features hardly change (benchmarks/README.md, "Orientation").
# A negative (grey levels inverted: a film exported with the wrong polarity, a screenshot
# of a viewer's inverted display) lies beyond the compact CNN's cut-off for 98.9-100% of
# val films (three seeds), but within an ImageNet backbone's for 56-70%: its features see
# the same edges either way. Inverted back, nearly every one of them is closer to the
# training films.
UPRIGHT = "turn the film upright and send it again"
TURNS = (
    Turn(
        "rot180",
        "upside down (turned 180 degrees)",
        lambda g: np.ascontiguousarray(g[::-1, ::-1]),
        "turned back",
        UPRIGHT,
    ),
    Turn(
        "vflip",
        "upside down (flipped top to bottom)",
        lambda g: np.ascontiguousarray(g[::-1]),
        "turned back",
        UPRIGHT,
    ),
    Turn(
        "negative",
        "a negative (grey levels inverted: bones dark, lungs light)",
        lambda g: np.subtract(255, g, dtype=np.uint8),
        "inverted back",
        "send the film with bones light and lungs dark, not its negative",
    ),
)
TURN_NAMES = {turn.name: turn for turn in TURNS}
# The typical distance of a training film from the mean is about the square root of the
# feature count (the shipped model's cut-off is 1.4 times it); a cut-off this many times it
# lets through films a hundred standard deviations away in every direction: no bound.
MAX_CUTOFF_PER_ROOT_SIZE = 100.0


@dataclass(frozen=True)
class Decision:
    """The guard's answer for one film.

    Attributes:
        in_scope: True, False, or None when not decided (--no-scope-check, or a model
            without scope statistics that passed the cheap checks).
        reason: why, in words, for the record's scope_reason.
        distance: the features' Mahalanobis distance, when the model gives them.
    """

    in_scope: bool | None
    reason: str
    distance: float | None = None


def colour_spread(rgb: np.ndarray) -> float:
    """How far an RGB image is from being grey or one tint, in grey levels.

    Each pixel's chroma (R - G, G - B) is a 2-vector; a grey film has none, and a film
    scanned or photographed with a tint has chroma along one direction (the tint), growing
    with brightness. The measure is the mean length of the chroma across that direction
    (the direction of the summed chroma), so only a second hue counts: a photograph.
    """
    pixels = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    if pixels.size == 0:
        return 0.0
    first = pixels[:, 0] - pixels[:, 1]
    second = pixels[:, 1] - pixels[:, 2]
    sum_first, sum_second = float(first.sum()), float(second.sum())
    norm = math.hypot(sum_first, sum_second)
    if norm == 0.0:
        across = np.hypot(first, second)
    else:
        across = np.abs(first * (sum_second / norm) - second * (sum_first / norm))
    return float(across.mean())


def flat_reason(gray: np.ndarray) -> str | None:
    """Why a resized 8-bit image is blank or flat (not a film), or None.

    Equalisation stretches even a blank image to full contrast, so the model answers
    with confidence; this is the one place that notices the image had nothing in it.
    """
    levels = int(np.count_nonzero(np.bincount(np.asarray(gray).ravel(), minlength=256)))
    spread = float(np.asarray(gray).std())
    if spread < FLAT_STD or levels < FLAT_LEVELS:
        return (
            f"flat or blank image (grey-level standard deviation {spread:.1f}, "
            f"{levels} grey levels)"
        )
    return None


def patient_age_years(tags: dict) -> float | None:
    """The patient's age in years from PatientAge, else PatientBirthDate and the study (or
    acquisition) date; None when the tags do not say (dicom.TAGS reads these)."""
    stated, from_dates = _stated_age(tags), _age_from_dates(tags)
    return stated if stated is not None else from_dates


def _stated_age(tags: dict) -> float | None:
    age = _AGE.match(str(tags.get("PatientAge") or "").strip().upper())
    return int(age.group(1)) * AGE_UNITS[age.group(2)] if age else None


def _age_from_dates(tags: dict) -> float | None:
    birth = _date(tags.get("PatientBirthDate"))
    for field in ("StudyDate", "AcquisitionDate"):
        taken = _date(tags.get(field))
        if birth and taken and taken >= birth:
            return (taken - birth).days / 365.25
    return None


def age_problem(tags: dict) -> str | None:
    """Why a film's age tags cannot be trusted, or None: a PatientAge that is not a DICOM
    age, or one the birth date contradicts by more than AGE_DISAGREEMENT years. Either
    means the header may not describe this child, so the film is not in scope."""
    text = str(tags.get("PatientAge") or "").strip()
    stated, from_dates = _stated_age(tags), _age_from_dates(tags)
    if text and stated is None:
        return f"DICOM PatientAge {text!r} is not an age (nnnD, nnnW, nnnM or nnnY)"
    if stated is not None and from_dates is not None:
        if abs(stated - from_dates) > AGE_DISAGREEMENT:
            return (
                f"DICOM PatientAge ({stated:.1f} years) and the birth date ({from_dates:.1f} "
                "years at the study) disagree"
            )
    return None


def _date(value):
    import datetime

    text = str(value or "").strip()
    try:
        return datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, TypeError):
        return None


def tag_reason(tags: dict | None, ages: dict | None = None) -> str | None:
    """Why a DICOM film's own tags put it out of scope (TAG_RULES, then the age), or None.

    Args:
        tags: attribute keyword -> value (strings), as the DICOM reader gives them.
        ages: the scope block's patient_age_years ({"min": years, "max": years}, whole
            years inclusive), or None when the training ages are not known.
    """
    if not tags:
        return None
    for rule in TAG_RULES:
        value = str(tags.get(rule.tag) or "").strip().upper()
        if value and value not in rule.accepted + rule.silent:
            return f"DICOM {rule.tag} {value} {rule.why} ({'/'.join(rule.accepted)} expected)"
    problem = age_problem(tags)
    if problem:
        return problem
    age = patient_age_years(tags)
    if ages and age is not None and not ages["min"] <= math.floor(age) <= ages["max"]:
        return (
            f"patient aged {age:.1f} years: the model was trained on ages "
            f"{ages['min']:g} to {ages['max']:g}"
        )
    return None


@dataclass(frozen=True)
class Statistics:
    """A scope block's numbers as arrays, converted once per model, not once per film
    (a scope/2 block of 64 x 1280 numbers takes milliseconds to convert)."""

    mean: np.ndarray
    whitening: np.ndarray
    cutoff: float
    ages: dict | None
    component_variances: np.ndarray | None = None  # scope/2 only
    residual_variance: float | None = None  # scope/2 only
    turns: tuple[Turn, ...] = ()  # the orientation check's, with its margin
    margin: float = 0.0

    @classmethod
    def of(cls, block: ScopeBlock) -> Statistics:
        """The statistics of a block that passed `problem`."""
        subspace = block["schema"] == SUBSPACE_SCHEMA
        return cls(
            mean=np.asarray(block["mean"], dtype=np.float64),
            whitening=np.asarray(block["whitening"], dtype=np.float64),
            cutoff=float(block["cutoff"]),
            ages=block.get("patient_age_years"),
            component_variances=(
                np.asarray(block["component_variances"], dtype=np.float64) if subspace else None
            ),
            residual_variance=float(block["residual_variance"]) if subspace else None,
            turns=tuple(
                TURN_NAMES[name] for name in (block.get("orientation") or {}).get("turns", ())
            ),
            margin=float((block.get("orientation") or {}).get("margin", 0.0)),
        )

    def distance(self, features: np.ndarray) -> float:
        """Mahalanobis distance of pooled features from the training films' mean.

        scope/1: |W x| with x = f - mean, W the whitening matrix (precision W^T W).
        scope/2: the same distance for a covariance whose k leading principal directions
        keep their variances and every other direction has the residual variance s2: with
        W the k directions scaled by 1 / sqrt(variance), z = W x,
        distance^2 = |z|^2 + (|x|^2 - sum(variance * z^2)) / s2, the second term the
        part of x outside the k directions (never below 0 after rounding).
        """
        centred = np.asarray(features, dtype=np.float64).reshape(-1) - self.mean
        whitened = self.whitening @ centred
        if self.residual_variance is None:
            return float(np.linalg.norm(whitened))
        outside = centred @ centred - self.component_variances @ (whitened * whitened)
        return math.sqrt(whitened @ whitened + max(outside, 0.0) / self.residual_variance)


def distance(features: np.ndarray, block: ScopeBlock) -> float:
    """Mahalanobis distance of pooled features from the training films' mean
    (`Statistics.distance`; for one film: converting the block each time is slow)."""
    return Statistics.of(block).distance(features)


def decide(
    gray: np.ndarray,
    features: np.ndarray | None,
    statistics: Statistics | None,
    *,
    colour: float | None = None,
    tags: dict | None = None,
    features_of: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Decision:
    """Whether one film is in scope, and why.

    Args:
        gray: the film resized to the model input, 8-bit, before equalisation.
        features: the model's pooled features for it (dequantized), or None.
        statistics: `Statistics.of` the sidecar's scope block, or None without one.
        colour: `colour_spread` of the decoded image, None for a grey one.
        tags: DICOM attributes, None for a JPEG or PNG.
        features_of: the model's features for another resized film (the film turned,
            for the orientation check of a block that has one); None skips that check.
    """
    ages = statistics.ages if statistics else None
    reason = tag_reason(tags, ages)
    if reason is None and colour is not None and colour > COLOUR_LIMIT:
        reason = (
            f"colour image (colour spread {colour:.1f} > {COLOUR_LIMIT}): a photograph, not a film"
        )
    reason = reason or flat_reason(gray)
    measured = None
    if statistics is not None and features is not None:
        measured = statistics.distance(features)
    if reason:
        return Decision(False, reason, measured)
    if statistics is None or measured is None:
        return Decision(None, NO_STATISTICS)
    if not measured <= statistics.cutoff:  # NaN features are out of scope too
        return Decision(
            False,
            f"unlike the training films (feature distance {measured:.1f} > "
            f"cut-off {statistics.cutoff:.1f})",
            measured,
        )
    turned = turned_reason(gray, measured, statistics, features_of) if features_of else None
    if turned:
        return Decision(False, turned, measured)
    return Decision(True, IN_SCOPE, measured)


def turned_reason(gray, measured: float, statistics: Statistics, features_of) -> str | None:
    """Why a film within the cut-off looks turned or negative (TURNS), or None: with the
    change undone, it lies within the cut-off and closer to the training films by more
    than the margin. Of several such changes, the one that brings it closest is named."""
    found = None
    for turn in statistics.turns:
        back = statistics.distance(features_of(turn.apply(gray)))
        if back <= statistics.cutoff and back < measured - statistics.margin:
            if found is None or back < found[1]:
                found = (turn, back)
    if found is None:
        return None
    turn, back = found
    return (
        f"looks {turn.looks}: {turn.undone} it is like the training films (feature "
        f"distance {back:.1f} against {measured:.1f}); {turn.advice}"
    )


def problem(block, output_sizes: list[int] | None = None) -> str | None:
    """What makes a sidecar's scope block unusable, or None.

    Args:
        output_sizes: the number of values of each model output, to check that the
            named feature output exists and has the block's size.
    """
    if not isinstance(block, dict) or block.get("schema") not in SCOPE_SCHEMAS:
        return f"scope.schema must be one of {', '.join(map(repr, SCOPE_SCHEMAS))}"
    feature_output = block.get("feature_output")
    if not isinstance(feature_output, dict):
        return "scope.feature_output is missing"
    index, size = feature_output.get("index"), feature_output.get("size")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (index, size)):
        return "scope.feature_output needs a whole-number index and size"
    if index < 1 or size < 1:
        return "scope.feature_output.index must be >= 1 (output 0 is the logit)"
    if output_sizes is not None and (index >= len(output_sizes) or output_sizes[index] != size):
        return f"the model has no output {index} of {size} values for the scope check"
    try:
        mean = np.asarray(block.get("mean"), dtype=np.float64)
        whitening = np.asarray(block.get("whitening"), dtype=np.float64)
        cutoff = float(block.get("cutoff"))
    except (TypeError, ValueError):
        return "scope.mean, scope.whitening and scope.cutoff must be numbers"
    if mean.shape != (size,) or whitening.ndim != 2 or whitening.shape[1] != size:
        return f"scope.mean must have {size} values and scope.whitening {size} columns"
    if not (np.isfinite(mean).all() and np.isfinite(whitening).all()):
        return "scope.mean and scope.whitening must be finite"
    if isinstance(block.get("cutoff"), bool) or not (math.isfinite(cutoff) and cutoff > 0):
        return "scope.cutoff must be a positive number"
    if cutoff > MAX_CUTOFF_PER_ROOT_SIZE * math.sqrt(size):
        return f"scope.cutoff {cutoff:g} is no bound for {size} features: every film would pass"
    if whitening.shape[0] == 0 or np.linalg.matrix_rank(whitening) < whitening.shape[0]:
        return "scope.whitening is singular: films unlike the training films would pass"
    if SCOPE_SCHEMAS[block["schema"]]:
        found = _subspace_problem(block, whitening.shape[0], size)
        if found:
            return found
    ages = block.get("patient_age_years")
    if ages is not None and not (
        isinstance(ages, dict)
        and all(isinstance(ages.get(k), (int, float)) for k in ("min", "max"))
        and ages["min"] <= ages["max"]
    ):
        return "scope.patient_age_years must be {'min': years, 'max': years} or null"
    return _orientation_problem(block.get("orientation"))


def _orientation_problem(orientation) -> str | None:
    if orientation is None:
        return None
    if not isinstance(orientation, dict):
        return "scope.orientation must be an object or null"
    turns, margin = orientation.get("turns"), orientation.get("margin")
    if not (isinstance(turns, list) and turns and all(t in TURN_NAMES for t in turns)):
        return f"scope.orientation.turns must name some of {', '.join(TURN_NAMES)}"
    if isinstance(margin, bool) or not isinstance(margin, (int, float)):
        return "scope.orientation.margin must be a number"
    if not (math.isfinite(margin) and margin >= 0):
        return "scope.orientation.margin must be a finite number >= 0"
    return None


def _subspace_problem(block: dict, rows: int, size: int) -> str | None:
    """What makes a scope/2 block's component and residual variances unusable, or None."""
    try:
        variances = np.asarray(block.get("component_variances"), dtype=np.float64)
        residual = block.get("residual_variance")
        residual_value = float(residual)
    except (TypeError, ValueError):
        return "scope.component_variances and scope.residual_variance must be numbers"
    if not 1 <= rows < size or variances.shape != (rows,):
        return (
            f"scope.whitening must have fewer rows than {size} columns, and "
            "scope.component_variances one value a row"
        )
    if not (np.isfinite(variances).all() and (variances > 0).all()):
        return "scope.component_variances must be positive numbers"
    if isinstance(residual, bool) or not (math.isfinite(residual_value) and residual_value > 0):
        return "scope.residual_variance must be a positive number"
    return None
