"""Chest X-ray folders → a patient-grouped split manifest → streaming tf.data pipelines.

Layouts accepted (folder names match case-insensitively):
  DIR/NORMAL, DIR/PNEUMONIA
  DIR/train/{NORMAL,PNEUMONIA} with optional DIR/val/... and DIR/test/...

Every model input is made by `edgexray.edge_runtime.infer.preprocess`'s functions, the
same code the device runs. Augmentation and the shift stress test act on the resized
8-bit image *before* normalisation, the way a different X-ray machine would.
"""

from __future__ import annotations

import csv
import io
import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from edgexray.artifacts import atomic_write
from edgexray.edge_runtime.infer import (
    ImageError,
    image_files,
    load_grayscale,
    normalize,
    resize,
)
from edgexray.errors import EdgexrayError

log = logging.getLogger("edgexray")

LABELS = ("NORMAL", "PNEUMONIA")  # index = model target; PNEUMONIA is the positive class
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
        files = image_files(folder)
        if not files:
            raise EdgexrayError(f"{folder} holds no .jpeg, .jpg or .png images")
        images[index] = files
    return images


def readable(paths: Iterable[Path], on_progress: Callable[[int], None] | None = None):
    """Split paths into those that decode and those that do not, warning for each bad one."""
    good, bad = [], []
    for count, path in enumerate(paths, 1):
        try:
            load_grayscale(path)
            good.append(path)
        except ImageError as err:
            log.warning("skipping %s", err)
            bad.append(path)
        if on_progress:
            on_progress(count)
    return good, bad


def scan(root: Path, on_progress: Callable[[int], None] | None = None):
    """All readable samples under a data root, with the split a Kaggle layout implies.

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
            good, bad = readable(files, on_progress)
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
        log.info("%d patient id(s) occur in both train/ and test/: treated as different "
                 "children, test/ stays exactly test/", len(shared))
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


# --- augmentation and acquisition shift, on the resized 8-bit image -----------------


def _affine(
    gray: np.ndarray, angle: float, zoom: float, shift_x: float, shift_y: float,
    aspect: float = 1.0,
):  # fmt: skip
    """Rotate by angle degrees, zoom in by `zoom` (wider by `aspect`) and shift by fractions
    of the size."""
    height, width = gray.shape
    theta = np.deg2rad(angle)
    zoom_x, zoom_y = zoom * np.sqrt(aspect), zoom / np.sqrt(aspect)
    cos_x, sin_x = np.cos(theta) / zoom_x, np.sin(theta) / zoom_x
    cos_y, sin_y = np.cos(theta) / zoom_y, np.sin(theta) / zoom_y
    cx, cy = width / 2.0, height / 2.0
    tx, ty = shift_x * width, shift_y * height
    # PIL wants the inverse map: output (x, y) -> input (a x + b y + c, d x + e y + f).
    coefficients = (
        cos_x, sin_x, cx - cos_x * (cx + tx) - sin_x * (cy + ty),
        -sin_y, cos_y, cy + sin_y * (cx + tx) - cos_y * (cy + ty),
    )  # fmt: skip
    image = Image.fromarray(gray).transform(
        (width, height), Image.Transform.AFFINE, coefficients, Image.Resampling.BILINEAR
    )
    return np.asarray(image, dtype=np.uint8)


def _gamma(gray: np.ndarray, gamma: float) -> np.ndarray:
    lut = np.round(255.0 * (np.arange(256) / 255.0) ** gamma).astype(np.uint8)
    return lut[gray]


def _contrast(gray: np.ndarray, factor: float) -> np.ndarray:
    mean = gray.mean()
    return np.clip((gray.astype(np.float32) - mean) * factor + mean, 0, 255).astype(np.uint8)


def _blur(gray: np.ndarray, radius: float) -> np.ndarray:
    image = Image.fromarray(gray).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(image, dtype=np.uint8)


def _noise(gray: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = gray.astype(np.float32) + rng.normal(0.0, sigma, gray.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _resample(gray: np.ndarray, scale: float, down_filter: int) -> np.ndarray:
    height, width = gray.shape
    small = (max(8, round(width * scale)), max(8, round(height * scale)))
    image = Image.fromarray(gray).resize(small, down_filter)
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def _jpeg(gray: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def augment(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random acquisition changes: position, zoom, rotation, exposure, sharpness, noise."""
    gray = _affine(
        gray,
        angle=rng.uniform(-10, 10),
        zoom=rng.uniform(0.85, 1.2),
        shift_x=rng.uniform(-0.07, 0.07),
        shift_y=rng.uniform(-0.07, 0.07),
    )
    gray = _gamma(gray, float(np.exp(rng.uniform(np.log(0.6), np.log(1.7)))))
    gray = _contrast(gray, rng.uniform(0.7, 1.3))
    if rng.random() < 0.3:
        gray = _blur(gray, rng.uniform(0.3, 1.5))
    if rng.random() < 0.3:
        gray = _noise(gray, rng.uniform(2.0, 10.0), rng)
    return gray


def augment_site(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`augment` plus what another hospital's export pipeline does to a film.

    Sharpness alone separates NORMAL from PNEUMONIA films of train/ with AUC 0.77 (0.67
    on test/): a model can learn "soft = pneumonia", and films exported from smaller
    originals or through another resizer or JPEG encoder then look like pneumonia. So
    films are randomly cropped with aspect changes, down- and re-sampled, and JPEG
    re-compressed, which makes sharpness and compression texture useless as a cue.
    """
    gray = _affine(
        gray,
        angle=rng.uniform(-10, 10),
        zoom=rng.uniform(0.85, 1.3),
        shift_x=rng.uniform(-0.08, 0.08),
        shift_y=rng.uniform(-0.08, 0.08),
        aspect=float(np.exp(rng.uniform(np.log(0.85), np.log(1.18)))),
    )
    gray = _gamma(gray, float(np.exp(rng.uniform(np.log(0.6), np.log(1.7)))))
    gray = _contrast(gray, rng.uniform(0.7, 1.3))
    if rng.random() < 0.3:
        gray = _blur(gray, rng.uniform(0.3, 1.5))
    if rng.random() < 0.5:
        filters = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.BOX,
                   Image.Resampling.NEAREST)  # fmt: skip
        gray = _resample(gray, rng.uniform(0.4, 0.95), filters[rng.integers(len(filters))])
    if rng.random() < 0.3:
        gray = _noise(gray, rng.uniform(2.0, 10.0), rng)
    if rng.random() < 0.5:
        gray = _jpeg(gray, rng.integers(25, 96))
    return gray


# Training augmentation policies, by the name TrainConfig.augmentation gives.
AUGMENTATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "acquisition": augment,
    "site": augment_site,
}

# Plausible differences between hospitals and machines, for the shift stress test.
SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda g: g,
    "gamma 0.6 (brighter)": lambda g: _gamma(g, 0.6),
    "gamma 1.6 (darker)": lambda g: _gamma(g, 1.6),
    "contrast x0.6": lambda g: _contrast(g, 0.6),
    "blur r=1.5": lambda g: _blur(g, 1.5),
    "noise sd=8": lambda g: _noise(g, 8.0, np.random.default_rng(0)),
    "zoom in x1.15": lambda g: _affine(g, 0, 1.15, 0, 0),
    "zoom out x0.9": lambda g: _affine(g, 0, 0.9, 0, 0),
    "rotate 8 deg": lambda g: _affine(g, 8, 1.0, 0, 0),
    "downsample x0.5": lambda g: _resample(g, 0.5, Image.Resampling.BILINEAR),
    "jpeg q30": lambda g: _jpeg(g, 30),
}


# --- tf.data pipelines ---------------------------------------------------------------


def model_input(path: str, input_spec: dict, change=None) -> np.ndarray:
    """The float model input for one file, optionally after an acquisition change."""
    gray = resize(load_grayscale(path), int(input_spec["height"]), int(input_spec["width"]))
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
):
    """A streaming tf.data pipeline of (image, label) batches.

    Files are decoded as they are needed, so memory does not grow with the data set.
    With training=True the order is reshuffled every epoch and every image gets a random
    augmentation drawn from a seeded stream, so a run is reproducible.
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
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def select(samples: list[Sample], split: str, data_root: Path) -> tuple[list[str], np.ndarray]:
    """Absolute paths and labels of one split."""
    members = [s for s in samples if s.split == split]
    paths = [str(Path(data_root) / s.path) for s in members]
    return paths, np.array([s.label for s in members], dtype=np.int64)
