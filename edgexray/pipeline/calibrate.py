"""`edgexray calibrate`: re-choose a deployed model's threshold on a new site's own films.

A threshold chosen on the training hospital's validation films does not carry to another
hospital (on Kaggle's official test folder the shipped int8 model's specificity falls from
0.975 to 0.64 at its validation threshold). Radiology guidance asks for local validation
and threshold adjustment before use at a new site; this module does it on a labelled local
sample, scored by the device's own code (`edge_runtime.infer`), and writes a copy of the
model whose sidecar (inside it, and its readable copy) carries the new threshold and a
`calibration` block: only the metadata is rewritten, the graph keeps every byte and the
model its identity (its sha256).

The rule: the Neyman-Pearson order statistic (Tong, Feng & Li 2018, "Neyman-Pearson
classification algorithms and NP receiver operating characteristics", Sci. Adv.).
With the n pneumonia scores sorted ascending s[0] <= ... <= s[n-1], and films called
pneumonia when probability >= threshold (as infer.py does), the threshold is s[k] for the
largest k with P(Binomial(n, 1 - target) <= k) <= 1 - confidence. Why it holds: for any
score distribution F of pneumonia films (ties included), the true miss rate at s[k] exceeds
1 - target only if at most k of the n films fall where F(x-) <= 1 - target, a set of
probability >= 1 - target, which happens with probability <= P(Binomial(n, 1 - target) <= k).
So recall >= target holds with at least the stated confidence over the draw of the sample,
not just on it. Equivalently, s[k] is the highest threshold whose one-sided Clopper-Pearson
lower bound of recall (on the sample's pneumonia films) reaches the target: a clinician can
read it as "the worst recall still consistent with what we saw". Ties (int8 outputs are
multiples of 1/256) only make it safer: films tied with s[k] are all called pneumonia, so
fewer than k are missed. Among valid rules it gives the highest threshold, hence the best
specificity the model's ranking allows. It uses only the pneumonia films, so the normal
films give an unbiased specificity estimate at that threshold (Wilson interval).

Too few pneumonia films cannot support the guarantee at all (99 for recall >= 0.97 at 95%,
with no miss): that is an error, unless the caller allows the plain empirical threshold,
which is then labelled a point estimate everywhere.

The exact binomial statistics live in metrics.py. This module is over 400 lines because
the rule, the cross-validation, the sidecar record, its use by `edgexray run` and its
summary are one concern, best read in one place.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgexray import __version__, artifacts
from edgexray.edge_runtime import metadata
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.options import option
from edgexray.edge_runtime.sidecar import SIDECAR_SCHEMA, copy_path, load_sidecar
from edgexray.errors import EdgexrayError, check_config
from edgexray.formatting import estimate, json_safe, number
from edgexray.pipeline import data, evaluate, metrics, scoring

log = logging.getLogger("edgexray")

CALIBRATION_SCHEMA = "edgexray.calibration/1"
# The order-statistic rule = the highest threshold whose Clopper-Pearson lower bound >= target.
CONFIDENT = "neyman-pearson-order-statistic"
POINT_ESTIMATE = "point-estimate"  # the plain empirical threshold: no confidence guarantee
FOLD_SEED = 0  # patient-to-fold assignment: fixed, so a calibration can be repeated exactly


class NotEnoughEvidence(EdgexrayError):
    """The sample holds too few pneumonia films for the recall target at the confidence."""


@dataclass(frozen=True)
class CalibrateConfig:
    """What the site's threshold must guarantee, and how to estimate what it buys.

    Attributes:
        target_recall: pneumonia recall the threshold must reach.
        confidence: probability, over the draw of the sample, that it does.
        prevalence: pneumonia prevalence at the site, for PPV and NPV (None: not reported).
        folds: k of the patient-grouped k-fold cross-validation.
        allow_point_estimate: with too few pneumonia films, fall back to the empirical
            threshold (labelled as such) instead of failing. With enough films the
            confident rule is always used.
    """

    target_recall: float = option(0.97, "Pneumonia recall the threshold must guarantee.")
    confidence: float = option(0.95, "Confidence of that guarantee, over the draw of the sample.")
    prevalence: float | None = option(None, "Pneumonia prevalence at the site, for PPV and NPV.")
    folds: int = option(5, "Patient-grouped cross-validation folds.")
    allow_point_estimate: bool = option(
        False,
        "With too few pneumonia films, use the plain empirical threshold (labelled a point "
        "estimate, no guarantee) instead of failing.",
    )

    def __post_init__(self):
        check_config(
            "calibration settings",
            {
                f"target recall must be in (0, 1), got {self.target_recall}": (
                    0.0 < self.target_recall < 1.0
                ),
                f"confidence must be in (0, 1), got {self.confidence}": 0.0 < self.confidence < 1.0,
                f"prevalence must be in (0, 1), got {self.prevalence}": (
                    self.prevalence is None or 0.0 < self.prevalence < 1.0
                ),
                f"folds must be at least 2, got {self.folds}": self.folds >= 2,
            },
        )


# --- the rule (its statistics live in metrics.py) -------------------------------------------


def choose_threshold(
    labels, probabilities, target_recall: float, confidence: float, allow_point_estimate=False
) -> tuple[float, str, int | None]:
    """The decision threshold for the target (pneumonia when probability >= threshold).

    Returns:
        (threshold, method, misses allowed): method CONFIDENT with k, or POINT_ESTIMATE
        with None when the films are too few and allow_point_estimate is set.

    Raises:
        NotEnoughEvidence: too few pneumonia films, and no point estimate allowed.
    """
    labels = np.asarray(labels).astype(bool)
    pneumonia = np.sort(np.asarray(probabilities, dtype=np.float64)[labels])
    k = metrics.misses_allowed(len(pneumonia), target_recall, confidence)
    if k is not None:
        return float(pneumonia[k]), CONFIDENT, k
    if not allow_point_estimate or len(pneumonia) == 0:
        needed = metrics.films_needed(target_recall, confidence)
        raise NotEnoughEvidence(
            f"{len(pneumonia)} pneumonia films cannot show recall >= {target_recall:g} with "
            f"{_percent(confidence)} confidence: that needs at least {needed} (with no miss); "
            "add pneumonia films or pass --allow-point-estimate"
        )
    return metrics.threshold_for_recall(labels, probabilities, target_recall), POINT_ESTIMATE, None


def _percent(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def _rates(labels: np.ndarray, predicted: np.ndarray, confidence: float) -> dict:
    """Recall and specificity with two-sided Wilson intervals at the confidence."""
    counts = metrics.confusion(labels, predicted)
    found, pneumonia = counts["tp"], counts["tp"] + counts["fn"]
    cleared, normal = counts["tn"], counts["tn"] + counts["fp"]
    recall_ci = metrics.wilson_interval(found, pneumonia, confidence)
    specificity_ci = metrics.wilson_interval(cleared, normal, confidence)
    return {
        "recall": found / pneumonia if pneumonia else None,
        "recall_ci": list(recall_ci) if pneumonia else None,
        "specificity": cleared / normal if normal else None,
        "specificity_ci": list(specificity_ci) if normal else None,
        "misses": counts["fn"],
        "false_alarms": counts["fp"],
    }


# --- cross-validation: what calibration buys, on films it has not seen -------------------


# How cross-validation grouped the films, by where their patients came from.
GROUPED_BY = {
    "map": "patient (from the --patients file)",
    "dicom": "patient (DICOM PatientID, else the file name)",
    "names": "patient (from Kaggle-style file names)",
    "films": "film: the file names name no patient, so every film counts as its own "
    "patient and films of one patient can sit on both sides of a fold (pass --patients FILE)",
}


def read_patient_map(path: Path) -> dict[str, str]:
    """file -> patient from a CSV with the columns file,patient (file: the path below the
    site folder, or the bare file name).

    Raises:
        EdgexrayError: a missing or unreadable file, or other columns.
    """
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise EdgexrayError(f"patient map not found: {path}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise EdgexrayError(f"{path} is not a readable CSV patient map ({err})") from None
    if not rows or not {"file", "patient"} <= set(rows[0]):
        raise EdgexrayError(f"{path} must be a CSV with the columns file,patient")
    return {row["file"]: row["patient"] for row in rows if row.get("file") and row.get("patient")}


def _dicom_patient(path: str) -> str:
    """A DICOM film's PatientID, or "" (not DICOM, no ID, or pydicom absent)."""
    from edgexray.edge_runtime import readers

    try:
        if readers.reader_for(path) is not readers.DICOM:
            return ""
        import pydicom

        dataset = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
        return str(dataset.get("PatientID", "") or "").strip()
    except Exception:  # noqa: BLE001 - any unreadable header: fall back to the file name
        return ""


def site_patients(root: Path, paths, patient_map: dict[str, str] | None = None):
    """The patient of every film and how they were found (a GROUPED_BY key).

    A patient map wins; else a DICOM film's PatientID; else a Kaggle-style file name; a
    film with none of these is its own patient.

    Raises:
        EdgexrayError: a patient map that lacks some of the films.
    """
    if patient_map is not None:
        patients, missing = [], []
        for path in paths:
            relative = Path(path).relative_to(root).as_posix() if root else Path(path).name
            patient = patient_map.get(relative, patient_map.get(Path(path).name))
            patients.append(patient)
            if patient is None:
                missing.append(relative)
        if missing:
            raise EdgexrayError(
                f"the patient map names no patient for {len(missing)} film(s), e.g. {missing[0]}"
            )
        return patients, "map"
    from_dicom = [_dicom_patient(p) for p in paths]
    patients = [d or data.patient_id(Path(p).name) for d, p in zip(from_dicom, paths, strict=True)]
    if any(from_dicom):
        return patients, "dicom"
    named = any(data.patient_id(Path(p).name) != Path(p).stem for p in paths)
    return patients, "names" if named else "films"


def patient_folds(paths, labels, folds: int, seed: int = FOLD_SEED, patients=None) -> np.ndarray:
    """The fold (0..folds-1) of every film; all films of a patient share one fold.

    Patients with pneumonia are dealt out first, then the others, in a seeded order, so
    every fold gets its share of pneumonia patients.

    Args:
        patients: the patient of every film (default: from the file names).

    Raises:
        EdgexrayError: fewer patients than folds.
    """
    if patients is None:
        patients = [data.patient_id(Path(p).name) for p in paths]
    sick = sorted({p for p, label in zip(patients, labels, strict=True) if label == 1})
    healthy = sorted(set(patients) - set(sick))
    if len(sick) + len(healthy) < folds:
        raise EdgexrayError(f"{len(sick) + len(healthy)} patients cannot fill {folds} folds")
    rng = np.random.default_rng(seed)
    order = [*rng.permutation(sick), *rng.permutation(healthy)]
    fold_of = {patient: index % folds for index, patient in enumerate(order)}
    return np.array([fold_of[p] for p in patients], dtype=np.int64)


def cross_validate(
    paths,
    labels,
    probabilities,
    config: CalibrateConfig,
    empirical: bool = False,
    patients=None,
    grouped_by: str = "names",
) -> dict:
    """Calibrate on k-1 patient-grouped folds, measure on the left-out one, pooled over folds.

    Args:
        empirical: use the plain empirical threshold in every fold instead of the rule,
            to show what the guarantee costs and what it protects against.
        patients, grouped_by: every film's patient and where they came from
            (`site_patients`); default: the file names.

    Returns:
        folds, thresholds, methods and the pooled _rates(); or folds, available False and
        the reason when there are fewer patients than folds or a training fold is too small
        for the rule.
    """
    labels = np.asarray(labels).astype(bool)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    try:
        fold = patient_folds(paths, labels, config.folds, patients=patients)
    except EdgexrayError as err:  # a tiny sample: the calibration stands, its CV cannot
        return {"folds": config.folds, "available": False, "reason": str(err)}
    predicted = np.zeros(len(labels), dtype=bool)
    thresholds, methods = [], []
    for held_out in range(config.folds):
        train = fold != held_out
        try:
            if empirical:
                threshold = metrics.threshold_for_recall(
                    labels[train], probabilities[train], config.target_recall
                )
                method = POINT_ESTIMATE
            else:
                threshold, method, _ = choose_threshold(
                    labels[train],
                    probabilities[train],
                    config.target_recall,
                    config.confidence,
                    config.allow_point_estimate,
                )
        except (NotEnoughEvidence, ValueError) as err:  # ValueError: no pneumonia film at all
            reason = f"a training fold has too few pneumonia films ({err})"
            return {"folds": config.folds, "available": False, "reason": reason}
        predicted[~train] = probabilities[~train] >= threshold
        thresholds.append(threshold)
        methods.append(method)
    return {
        "folds": config.folds,
        "available": True,
        "grouped_by": GROUPED_BY[grouped_by],
        "thresholds": thresholds,
        "methods": sorted(set(methods)),
        **_rates(labels, predicted, config.confidence),
    }


# --- the site's films, scored as the device scores them ----------------------------------


def site_films(site_dir: Path) -> tuple[Path, list[str], np.ndarray]:
    """(class root, image files, labels) of a folder holding NORMAL/ and PNEUMONIA/.

    Raises:
        EdgexrayError: a missing folder, another layout, or a class with no image file.
    """
    folders = data.find_class_folders(Path(site_dir))
    if "" not in folders:
        raise EdgexrayError(
            f"{site_dir} must hold the site's labelled films in NORMAL/ and PNEUMONIA/ "
            f"(it holds {', '.join(f'{name}/' for name in folders)}: give one of those)"
        )
    per_label = data.list_images(folders[""])  # refuses a missing or empty class
    paths = [str(p) for label in sorted(per_label) for p in per_label[label]]
    labels = np.array([label for label in sorted(per_label) for _ in per_label[label]])
    return folders[""], paths, labels


def check_site(site_dir: Path, config: CalibrateConfig) -> None:
    """Fail early on a site folder that cannot support the target, before any scoring.

    Raises:
        EdgexrayError: bad layout or a class without images; NotEnoughEvidence: fewer
            pneumonia files than the target needs (unless a point estimate is allowed).
    """
    _, paths, labels = site_films(site_dir)
    if not config.allow_point_estimate:
        choose_threshold(labels, np.zeros(len(paths)), config.target_recall, config.confidence)


def score_films(model_path: Path, paths: list[str], labels) -> scoring.Scores:
    """Pneumonia probability of every readable film, by the device's code path.

    The one scoring path (pipeline.scoring) with the model's sidecar, as evaluate and
    verify use it: infer.py's preprocessing and interpreter call. The one place
    calibration scores films.
    """
    return scoring.score([evaluate.load_model(Path(model_path)).scorer], paths, labels)


def films_in_both_classes(paths, labels) -> list[str]:
    """The pneumonia films whose bytes are also a normal film of the sample (a labelling
    slip that makes the sample contradict itself)."""
    normal = {artifacts.sha256(p) for p, label in zip(paths, labels, strict=True) if label == 0}
    return [
        p
        for p, label in zip(paths, labels, strict=True)
        if label == 1 and artifacts.sha256(p) in normal
    ]


def file_list_sha256(root: Path, paths) -> str:
    """sha256 of the sorted relative paths, one per line, each ending in a newline.

    The same as `(cd ROOT && find NORMAL PNEUMONIA -type f | LC_ALL=C sort | sha256sum)` when
    every file was used.
    """
    names = sorted(Path(p).relative_to(root).as_posix() for p in paths)
    return hashlib.sha256("".join(f"{name}\n" for name in names).encode()).hexdigest()


# --- the entry point ------------------------------------------------------------------------


def calibrate(
    model_path: Path,
    site_dir: Path,
    out_dir: Path,
    config: CalibrateConfig,
    patient_map: Path | None = None,
) -> dict:
    """Choose the site's threshold and write the model copy with its new sidecar to out_dir.

    The source model is only read. out_dir gets MODEL.tflite (the same graph, the same
    identity) carrying the source sidecar with the new threshold, target_recall and a
    `calibration` block, and its readable copy MODEL.json, each written atomically.

    Returns:
        model (the copy), sidecar (its path), calibration (the block written) and films
        (the sample's readable files, as listed).

    Raises:
        NotEnoughEvidence: too few pneumonia films for the target (exit 2).
        EdgexrayError: not a .tflite with a valid sidecar, a bad site folder, no
            readable film of a class, or out_dir being the model's own folder.
    """
    model_path, out_dir = Path(model_path), Path(out_dir)
    if model_path.suffix.lower() != ".tflite":
        raise EdgexrayError(f"{model_path}: calibrate needs the deployed .tflite model")
    try:
        sidecar = load_sidecar(model_path)
        source_sidecar = metadata.read(model_path).sidecar_bytes
    except InferenceError as err:
        raise EdgexrayError(str(err)) from None
    if source_sidecar is None:  # a model from before models carried their sidecar
        source_sidecar = copy_path(model_path).read_bytes()
    if out_dir.resolve() == model_path.parent.resolve():
        raise EdgexrayError(
            f"--out {out_dir} is the model's own folder: the source model is never "
            "replaced, choose another folder"
        )
    _check_out(out_dir, model_path, sidecar)
    patient_of = read_patient_map(patient_map) if patient_map is not None else None
    root, paths, labels = site_films(site_dir)
    log.info("calibrating %s on %d films from %s", model_path.name, len(paths), site_dir)
    scores = score_films(model_path, paths, labels)
    for index, label in enumerate(data.LABELS):
        if not np.any(scores.labels == index):
            raise EdgexrayError(f"{root}/{label} holds no readable image")
    skipped = len(scores.skipped)
    paths, labels, probabilities = scores.paths, scores.labels, scores.probabilities[0]
    both = films_in_both_classes(paths, labels)
    if both:
        log.warning(
            "%d film(s) are in both NORMAL/ and PNEUMONIA/ with the same bytes (e.g. %s): "
            "the sample's labels contradict each other",
            len(both),
            both[0],
        )
    patients, grouped_by = site_patients(root, paths, patient_of)
    if grouped_by == "films":
        log.warning("calibration sample: %s", GROUPED_BY["films"])
    grouping = {"patients": patients, "grouped_by": grouped_by}
    # Counted, not removed: the threshold is chosen on every film's probability (a site
    # sample is what the site sends), and the count says how many the device would refuse.
    out_of_scope = evaluate.summarize(labels, probabilities, 0.5, scores.in_scope[0])[
        "out_of_scope"
    ]

    threshold, method, k = choose_threshold(
        labels,
        probabilities,
        config.target_recall,
        config.confidence,
        config.allow_point_estimate,
    )
    calibrated = _rates(labels.astype(bool), probabilities >= threshold, config.confidence)
    source_threshold = float(sidecar["threshold"])
    pneumonia = int(labels.sum())
    calibration = {
        "schema": CALIBRATION_SCHEMA,
        "edgexray_version": __version__,
        "calibrated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": method,
        "guarantee": method == CONFIDENT,
        "target_recall": config.target_recall,
        "confidence": config.confidence,
        "misses_allowed": k,
        "threshold": threshold,
        "source_threshold": source_threshold,
        "source_target_recall": sidecar.get("target_recall"),
        "source_sidecar_sha256": hashlib.sha256(source_sidecar).hexdigest(),
        "sample": {
            "folder": str(Path(site_dir).resolve()),
            "n": int(len(labels)),
            "pneumonia": pneumonia,
            "normal": int(len(labels) - pneumonia),
            "patients": len(set(patients)),
            "patients_from": GROUPED_BY[grouped_by],
            "skipped_unreadable": skipped,
            "out_of_scope": out_of_scope,
            "in_both_classes": len(both),
            "files_sha256": file_list_sha256(root, paths),
        },
        "recall_lower_bound": metrics.recall_lower_bound(
            pneumonia - calibrated["misses"], pneumonia, config.confidence
        ),
        "expected_specificity": calibrated["specificity"],
        "expected_specificity_ci": calibrated["specificity_ci"],
        "interval": f"Wilson, two-sided {_percent(config.confidence)}",
        "in_sample": calibrated,
        "uncalibrated": {
            "threshold": source_threshold,
            **_rates(labels.astype(bool), probabilities >= source_threshold, config.confidence),
        },
        "cross_validation": cross_validate(paths, labels, probabilities, config, **grouping),
        "empirical": None,
        "prevalence": None,
    }
    if method == CONFIDENT:
        # The threshold a naive calibration would pick, for comparison: better specificity,
        # but its recall on unseen films is a coin toss around the target.
        empirical = metrics.threshold_for_recall(labels, probabilities, config.target_recall)
        calibration["empirical"] = {
            "threshold": empirical,
            "in_sample": _rates(labels.astype(bool), probabilities >= empirical, config.confidence),
            "cross_validation": cross_validate(
                paths, labels, probabilities, config, True, **grouping
            ),
        }
    if config.prevalence is not None:
        # Point values, and a cautious pair at the guaranteed recall and the lower end of
        # the specificity interval (both values only grow with recall and specificity).
        calibration["prevalence"] = {
            "prevalence": config.prevalence,
            **metrics.predictive_values(
                calibrated["recall"], calibrated["specificity"], config.prevalence
            ),
            "cautious": metrics.predictive_values(
                config.target_recall if method == CONFIDENT else calibrated["recall"],
                calibrated["specificity_ci"][0],
                config.prevalence,
            ),
        }
    model_out, sidecar_out = _write_calibrated(model_path, sidecar, out_dir, calibration)
    log.info("calibrated threshold %.6g (was %.6g) by %s", threshold, source_threshold, method)
    return {"model": model_out, "sidecar": sidecar_out, "calibration": calibration, "films": paths}


def _check_out(out_dir: Path, model_path: Path, sidecar: dict) -> None:
    """Refuse an --out whose MODEL.tflite or MODEL.json would replace something else.

    Writing there again is fine when it holds this very model (the same identity: an
    earlier calibration, which the new one replaces) and a sidecar of it.

    Raises:
        EdgexrayError: out_dir is a file, or holds another model or sidecar of that name.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgexrayError(f"--out {out_dir} is a file, not a folder: choose a folder")
    model_out = out_dir / model_path.name
    sidecar_out = model_out.with_suffix(".json")
    if model_out.exists() and (
        not model_out.is_file() or _identity(model_out) != sidecar["sha256"]
    ):
        raise EdgexrayError(
            f"{model_out} exists and is another model: calibrate never replaces it, "
            "choose another --out"
        )
    if sidecar_out.exists():
        try:
            earlier = artifacts.read_json(sidecar_out)
        except EdgexrayError:
            earlier = {}
        if (earlier.get("schema"), earlier.get("sha256")) != (
            SIDECAR_SCHEMA,
            sidecar["sha256"],
        ):
            raise EdgexrayError(
                f"{sidecar_out} exists and is not a sidecar of this model: calibrate never "
                "replaces it, choose another --out"
            )


def _identity(model: Path) -> str | None:
    try:
        return metadata.identity(model)
    except InferenceError:
        return None


def _write_calibrated(model_path: Path, sidecar: dict, out_dir: Path, calibration: dict):
    model_out = out_dir / model_path.name
    new_sidecar = {
        **sidecar,
        "threshold": calibration["threshold"],
        "target_recall": calibration["target_recall"],
        "calibration": calibration,
    }
    source = model_path.read_bytes()
    if metadata.parse(source).sha256 != sidecar["sha256"]:
        raise EdgexrayError(f"{model_path} changed while it was being calibrated; run again")
    artifacts.write_model(model_out, source, json_safe(new_sidecar))
    return model_out, copy_path(model_out)


def calibrate_run_model(
    run_dir: Path, model_path: Path, site_dir: Path, config: CalibrateConfig
) -> dict:
    """`edgexray run --calibrate-on`: calibrate the run's device model, then measure it on
    the run's test split before and after, leaving out films that were calibration films.

    Writes run_dir/calibrated/MODEL.tflite (+ sidecar) and run_dir/calibration.json.

    Returns:
        What calibration.json holds: the model, the calibrated copy, the calibration block
        and `test`: before/after rates on the held-out test films, with how many test films
        were left out for being calibration films (or why there is no such comparison).
    """
    run_dir = Path(run_dir)
    # The run's own earlier calibration (perhaps of another model by the same name) goes.
    artifacts.remove_outputs(
        run_dir, names=(artifacts.CALIBRATED_DIR, artifacts.CALIBRATION_REPORT)
    )
    result = calibrate(model_path, site_dir, run_dir / artifacts.CALIBRATED_DIR, config)
    test = evaluate.find_images(run_dir, "test")
    site = {Path(p).resolve() for p in result["films"]}
    unseen = [Path(p).resolve() not in site for p in test.paths]
    overlap = len(unseen) - sum(unseen)
    report = {
        "model": str(model_path),
        "calibrated_model": str(result["model"]),
        "calibration": result["calibration"],
        "test": {"films": len(test.paths), "left_out_as_calibration_films": overlap},
    }
    paths = [p for p, keep in zip(test.paths, unseen, strict=True) if keep]
    labels = test.labels[np.array(unseen, dtype=bool)]
    if not paths or len(set(labels.tolist())) < 2:
        # Calibrating and reporting on the same films would flatter the threshold.
        report["test"]["reason"] = "no test films of both classes besides the calibration films"
    else:
        scores = score_films(Path(result["model"]), paths, labels)
        labels, probabilities = scores.labels.astype(bool), scores.probabilities[0]
        for name, threshold in (
            ("before", result["calibration"]["source_threshold"]),
            ("after", result["calibration"]["threshold"]),
        ):
            rates = _rates(labels, probabilities >= threshold, config.confidence)
            report["test"][name] = {"threshold": threshold, **rates}
    artifacts.write_json(run_dir / artifacts.CALIBRATION_REPORT, json_safe(report))
    return report


# --- presentation (the CLI prints these) ----------------------------------------------------


def _rate_row(name: str, threshold, rates: dict) -> str:
    recall = estimate(rates["recall"], rates["recall_ci"])
    specificity = estimate(rates["specificity"], rates["specificity_ci"])
    threshold_text = f"{threshold:.4f}" if isinstance(threshold, float) else threshold
    return (
        f"{name:<26} {threshold_text:>9}  {recall:>22}  {specificity:>22}"
        f"  {rates['misses']:>6} {rates['false_alarms']:>6}"
    )


def _scope_text(sample: dict) -> str:
    counts = evaluate.out_of_scope_counts(sample)
    if counts is None:
        return evaluate.NOT_JUDGED
    return (
        f"{counts} would be labelled OUT_OF_SCOPE on the device; the threshold is chosen "
        "on every film's probability"
    )


def summary_lines(result: dict) -> list[str]:
    """A readable summary of a calibrate() result."""
    c = result["calibration"]
    sample, cv = c["sample"], c["cross_validation"]
    level = _percent(c["confidence"])
    unreadable = sample["skipped_unreadable"]
    skipped = f", {unreadable} unreadable skipped" if unreadable else ""
    if c["guarantee"]:
        rule = (
            f"recall >= {c['target_recall']:g} with {level} confidence (Neyman-Pearson order "
            f"statistic = Clopper-Pearson lower bound; misses allowed: {c['misses_allowed']})"
        )
    else:
        needed = metrics.films_needed(c["target_recall"], c["confidence"])
        rule = (
            f"POINT ESTIMATE, no confidence guarantee: empirical recall >= {c['target_recall']:g} "
            f"on this sample ({needed} pneumonia films needed for {level} confidence)"
        )
    lines = [
        f"sample       {sample['folder']}: {sample['n']} films ({sample['pneumonia']} pneumonia, "
        f"{sample['normal']} normal, {sample['patients']} patients{skipped})",
    ]
    if sample.get("in_both_classes"):
        lines.append(
            f"WARNING      {sample['in_both_classes']} film(s) are in both NORMAL/ and PNEUMONIA/ "
            "(same bytes): the sample's labels contradict each other"
        )
    lines += [
        f"rule         {rule}",
        f"out of scope {_scope_text(sample)}",
        f"threshold    {c['threshold']:.6g} (was {c['source_threshold']:.6g})",
        f"{'':<26} {'threshold':>9}  {'recall [' + level + ' CI]':>22}"
        f"  {'specificity [' + level + ' CI]':>22}  {'missed':>6} {'false+':>6}",
        _rate_row("uncalibrated (this sample)", c["uncalibrated"]["threshold"], c["uncalibrated"]),
        _rate_row("calibrated, in-sample", c["threshold"], c["in_sample"]),
    ]
    if cv["available"]:
        grouped = cv.get("grouped_by", GROUPED_BY["names"])
        lines.append(
            _rate_row(f"calibrated, {cv['folds']}-fold CV", "per fold", cv)
            + (
                "  (patient-grouped, films unseen by their threshold)"
                if grouped.startswith("patient")
                else "  (NOT patient-grouped: see below)"
            )
        )
        if not grouped.startswith("patient"):
            lines.append(f"grouping     {grouped}")
    else:
        lines.append(f"{cv['folds']}-fold CV: not available: {cv['reason']}")
    if c["empirical"]:
        naive = c["empirical"]
        lines.append(_rate_row("empirical, in-sample", naive["threshold"], naive["in_sample"]))
        if naive["cross_validation"]["available"]:
            lines.append(
                _rate_row(
                    f"empirical, {cv['folds']}-fold CV", "per fold", naive["cross_validation"]
                )
                + "  (no guarantee: for comparison only)"
            )
    lines.append(
        f"guaranteed   recall lower bound {c['recall_lower_bound']:.4f} ({level}, one-sided "
        "Clopper-Pearson)"
        if c["guarantee"]
        else "guaranteed   nothing (point estimate)"
    )
    if c["prevalence"]:
        p = c["prevalence"]
        lines.append(
            f"prevalence   {p['prevalence']:g}: PPV {number(p['ppv'])}, NPV "
            f"{number(p['npv'])} (cautious: PPV {number(p['cautious']['ppv'])}, "
            f"NPV {number(p['cautious']['npv'])})"
        )
    lines += [
        f"model        {result['model']} (the source's graph and sha256, the new threshold "
        "and calibration block inside)",
        f"sidecar      {result['sidecar']} (its readable copy)",
    ]
    return lines
