"""Chest X-ray folders → a patient-grouped split manifest → streaming tf.data pipelines.

Layouts accepted (folder names match case-insensitively):
  DIR/NORMAL, DIR/PNEUMONIA
  DIR/train/{NORMAL,PNEUMONIA} with optional DIR/val/... and DIR/test/...

Every model input is made by `edgexray.edge_runtime.preprocess`'s functions, the
same code the device runs. Augmentation and the shift stress test act on the resized
8-bit image *before* normalisation, the way a different X-ray machine would.
"""

from __future__ import annotations

import csv
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgexray.artifacts import atomic_write
from edgexray.edge_runtime import readers
from edgexray.edge_runtime.errors import ImageError
from edgexray.edge_runtime.preprocess import normalize
from edgexray.edge_runtime.sidecar import LABELS  # index = model target; PNEUMONIA is positive
from edgexray.errors import EdgexrayError
from edgexray.pipeline import decode_cache
from edgexray.pipeline.augment import AUGMENTATIONS

log = logging.getLogger("edgexray")

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = ("path", "label", "patient_id", "split")

# Kaggle names: person1000_bacteria_2931.jpeg, IM-0115-0001.jpeg, NORMAL2-IM-0587-0001-0001.jpeg
_PATIENT = re.compile(r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)[_-]", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    path: str  # relative to the data root, with forward slashes
    label: int  # 0 NORMAL, 1 PNEUMONIA
    patient_id: str
    split: str = ""


def patient_id(filename: str) -> str:
    """The patient a Kaggle file name belongs to; an unparsable name is its own patient."""
    stem = Path(filename).stem
    match = _PATIENT.match(stem)
    return match.group(1) if match else stem


def _child(folder: Path, name: str) -> Path | None:
    """The sub-folder called `name`, matched case-insensitively."""
    if not folder.is_dir():
        return None
    for child in sorted(folder.iterdir()):
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def find_class_folders(root: Path) -> dict[str, Path]:
    """Map 'train'/'val'/'test' (or '' for a flat folder) to folders holding the classes.

    Raises:
        EdgexrayError: the root is missing or holds neither layout.
    """
    root = Path(root)
    if not root.exists():
        raise EdgexrayError(f"data folder not found: {root}")
    if not root.is_dir():
        raise EdgexrayError(f"data path is not a folder: {root}")
    if any(_child(root, label) for label in LABELS):
        return {"": root}
    splits = {split: _child(root, split) for split in SPLITS}
    found = {split: folder for split, folder in splits.items() if folder}
    if not found.get("train") and not found.get("test"):
        raise EdgexrayError(
            f"{root} has no NORMAL/ and PNEUMONIA/ folders, nor train/ or test/ holding them"
        )
    return found


def list_images(class_root: Path) -> dict[int, list[Path]]:
    """Image files per label under one folder that holds NORMAL/ and PNEUMONIA/.

    Raises:
        EdgexrayError: a class folder is missing or holds no image files.
    """
    images = {}
    for index, label in enumerate(LABELS):
        folder = _child(class_root, label)
        if folder is None:
            raise EdgexrayError(f"{class_root} has no {label}/ folder")
        files = readers.film_files(folder)
        if not files:
            raise EdgexrayError(f"{folder} holds no .jpeg, .jpg, .png or DICOM images")
        images[index] = files
    return images


def readable(
    paths: Iterable[Path],
    on_progress: Callable[[int], None] | None = None,
    input_spec: dict | None = None,
):
    """Split paths into those that decode and those that do not, warning for each bad one.

    With the model's input_spec, each film is decoded through the decode cache, so the
    scan that must decode every film anyway leaves them ready for the first epoch.
    """
    good, bad = [], []
    for count, path in enumerate(paths, 1):
        try:
            if input_spec is None:
                readers.read(path)[0]
            else:
                decode_cache.resized_grayscale(path, input_spec)
            good.append(path)
        except ImageError as err:
            log.warning("skipping %s", err)
            bad.append(path)
        if on_progress:
            on_progress(count)
    return good, bad


def scan(
    root: Path,
    on_progress: Callable[[int], None] | None = None,
    input_spec: dict | None = None,
):
    """All readable samples under a data root, with the split a Kaggle layout implies.

    input_spec: decode through the decode cache at this size (see `readable`).

    Returns:
        (samples, skipped): samples have split 'test' when they came from a test/ folder,
        '' otherwise; skipped lists unreadable files.

    Raises:
        EdgexrayError: bad layout, or a class left without a readable image.
    """
    root = Path(root).resolve()
    samples, skipped = [], []
    for split, class_root in find_class_folders(root).items():
        for label, files in list_images(class_root).items():
            good, bad = readable(files, on_progress, input_spec)
            if not good:
                raise EdgexrayError(f"{class_root}/{LABELS[label]} has no readable image")
            skipped += bad
            for path in good:
                samples.append(
                    Sample(
                        path=path.relative_to(root).as_posix(),
                        label=label,
                        patient_id=patient_id(path.name),
                        split="test" if split == "test" else "",
                    )
                )
    return samples, skipped


def split_by_patient(
    samples: list[Sample], val_fraction: float, test_fraction: float, seed: int
) -> list[Sample]:
    """Assign train/val/test by patient, stratified by label and reproducible by seed.

    No patient is in two splits. Samples already marked 'test' (a Kaggle test/ folder)
    stay there, and then val is carved from the rest with the val fraction alone.
    """
    test_patients = {s.patient_id for s in samples if s.split == "test"}
    fractions = {"val": val_fraction, "test": 0.0 if test_patients else test_fraction}
    # A given test/ folder is the test split, exactly: no train/ film ever joins it. Kaggle
    # reuses `personNNN` ids across folders for different children (for every shared id the
    # infection type differs and image numbers never collide; see README, "Data"), so a
    # shared id is not a leak and its train/ films stay in the training pool.
    shared = {s.patient_id for s in samples if s.split != "test"} & test_patients
    if shared:
        log.info(
            "%d patient id(s) occur in both train/ and test/: treated as different "
            "children, test/ stays exactly test/",
            len(shared),
        )
    pool = [s for s in samples if s.split != "test"]

    patients: dict[str, list[Sample]] = defaultdict(list)
    for sample in pool:
        patients[sample.patient_id].append(sample)
    # Stratify on each patient's majority label; iterate patients in a seeded order.
    by_label: dict[int, list[str]] = defaultdict(list)
    for pid in sorted(patients):
        labels = [s.label for s in patients[pid]]
        by_label[round(sum(labels) / len(labels))].append(pid)

    rng = random.Random(seed)
    assignment = {}
    for label in sorted(by_label):
        pids = by_label[label]
        rng.shuffle(pids)
        total = sum(len(patients[p]) for p in pids)
        quota = {split: fraction * total for split, fraction in fractions.items()}
        filled = {"val": 0, "test": 0}
        for pid in pids:
            size = len(patients[pid])
            target = next((s for s in ("test", "val") if filled[s] + size / 2 <= quota[s]), None)
            if target:
                filled[target] += size
            assignment[pid] = target or "train"
    result = [Sample(s.path, s.label, s.patient_id, assignment[s.patient_id]) for s in pool] + [
        s for s in samples if s.split == "test"
    ]
    return sorted(result, key=lambda s: (SPLITS.index(s.split), s.path))


def save_manifest(samples: list[Sample], path: Path) -> None:
    """Write the split manifest as CSV (path, label, patient_id, split), atomically."""

    def write(temporary: Path) -> None:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(MANIFEST_FIELDS)
            for s in samples:
                writer.writerow([s.path, LABELS[s.label], s.patient_id, s.split])

    atomic_write(Path(path), write)


def load_manifest(path: Path) -> list[Sample]:
    """Read a manifest written by save_manifest.

    Raises:
        EdgexrayError: missing file or unexpected columns/labels.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgexrayError(f"split manifest not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
                raise EdgexrayError(f"{path} is not an edgexray split manifest")
            return [
                Sample(row["path"], LABELS.index(row["label"]), row["patient_id"], row["split"])
                for row in reader
            ]
    except UnicodeDecodeError:
        raise EdgexrayError(f"{path} is not UTF-8 text: not an edgexray split manifest") from None
    except csv.Error as err:
        raise EdgexrayError(f"{path} is not a readable CSV manifest ({err})") from None
    except (ValueError, TypeError):  # an unknown label, or a row with missing cells (None)
        raise EdgexrayError(f"{path} has a label other than {LABELS} or a short row") from None


def split_counts(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """Images and patients per split and label, for reports."""
    counts = {}
    for split in SPLITS:
        members = [s for s in samples if s.split == split]
        counts[split] = {
            "images": len(members),
            "patients": len({s.patient_id for s in members}),
            **{label: sum(s.label == i for s in members) for i, label in enumerate(LABELS)},
        }
    return counts


# --- tf.data pipelines ---------------------------------------------------------------


def model_input(path: str, input_spec: dict, change=None) -> np.ndarray:
    """The float model input for one file, optionally after an acquisition change."""
    gray = decode_cache.resized_grayscale(path, input_spec)  # decoded once, then cached
    if change is not None:
        gray = change(gray)
    return normalize(gray, input_spec["normalization"])


def make_dataset(
    paths: list[str],
    labels: list[int] | np.ndarray,
    input_spec: dict,
    batch_size: int,
    *,
    training: bool = False,
    seed: int = 0,
    change: Callable[[np.ndarray], np.ndarray] | None = None,
    augmentation: str = "acquisition",
    mixup: float = 0.0,
    class_weights: dict[int, float] | None = None,
):
    """A streaming tf.data pipeline of (image, label) batches.

    Files are decoded as they are needed, so memory does not grow with the data set.
    With training=True the order is reshuffled every epoch and every image gets a random
    augmentation drawn from a seeded stream, so a run is reproducible. With mixup > 0
    (training only) batches are (image, soft label, sample weight); see `mix_batch`.
    """
    from edgexray.compat import tf

    height, width = int(input_spec["height"]), int(input_spec["width"])
    dataset = tf.data.Dataset.from_tensor_slices(
        (np.asarray(paths, dtype=str), np.asarray(labels, dtype=np.float32))
    )

    def decode(path, element_seed):
        path = path.decode() if isinstance(path, bytes) else str(path)
        if training:
            rng = np.random.default_rng(int(element_seed))
            policy = AUGMENTATIONS[augmentation]
            return model_input(path, input_spec, lambda gray: policy(gray, rng))
        return model_input(path, input_spec, change)

    def to_example(path, label, element_seed):
        image = tf.numpy_function(decode, [path, element_seed], tf.float32, stateful=False)
        image.set_shape((height, width, 1))
        return image, label

    if training:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(lambda pl, s: (pl[0], pl[1], s))
    else:
        dataset = dataset.map(lambda p, label: (p, label, tf.constant(0, tf.int64)))
    dataset = dataset.map(to_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size)
    if training and mixup > 0:
        weights = class_weights or {0: 1.0, 1: 1.0}
        seeds = tf.data.Dataset.random(seed=seed + 1).batch(2)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda batch, pair: mix_batch(*batch, pair, mixup, weights)
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def mix_batch(images, labels, seed_pair, alpha: float, class_weights: dict[int, float]):
    """Mixup: each film blended with another film of the batch, label and class weight
    blended alike. Soft labels between the classes keep the model from betting
    everything on one cue that a new site may not share.
    """
    from edgexray.compat import tf

    seed = tf.cast(seed_pair % (2**31 - 1), tf.int32)
    size = tf.shape(labels)[0]
    # Beta(alpha, alpha) from two gammas, one weight per film.
    first = tf.random.stateless_gamma([size], seed, alpha)
    second = tf.random.stateless_gamma([size], seed[::-1], alpha)
    share = first / (first + second)
    partner = tf.reverse(tf.range(size), [0])
    weight_of = labels * class_weights[1] + (1.0 - labels) * class_weights[0]

    def blend(values):
        weight = tf.reshape(share, [-1] + [1] * (len(values.shape) - 1))
        return weight * values + (1 - weight) * tf.gather(values, partner)

    return blend(images), blend(labels), blend(weight_of)


def select(samples: list[Sample], split: str, data_root: Path) -> tuple[list[str], np.ndarray]:
    """Absolute paths and labels of one split."""
    members = [s for s in samples if s.split == split]
    paths = [str(Path(data_root) / s.path) for s in members]
    return paths, np.array([s.label for s in members], dtype=np.int64)


def run_split(run_dir: Path, split: str) -> tuple[list[str], np.ndarray]:
    """Absolute paths and labels of one split of a trained run, as its manifest recorded
    them (under the data root of its config.json): the one loader of a run's films.

    Raises:
        EdgexrayError: no manifest or config, or the manifest has no film in that split.
    """
    from edgexray import artifacts

    run_dir = Path(run_dir)
    samples = load_manifest(run_dir / artifacts.MANIFEST)
    data_root = Path(artifacts.read_json(run_dir / artifacts.CONFIG).get("data", ""))
    paths, labels = select(samples, split, data_root)
    if not paths:
        raise EdgexrayError(f"the manifest of {run_dir} has no {split} images")
    return paths, labels
