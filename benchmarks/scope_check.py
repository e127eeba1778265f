"""The out-of-scope guard: give the shipped model its statistics, and measure the guard.

    python benchmarks/scope_check.py reference [--data DIR]
        Re-export edgexray/models/edgexray-int8.tflite with its pooled features as a second
        output (first output unchanged, checked on every test/ film), and fit its sidecar's
        scope block on the recorded run's split (regenerated: seed 42, TrainConfig
        defaults; refused unless it gives the documented counts).

    python benchmarks/scope_check.py measure [--data DIR] [--model M] [--out FILE.json]
        False out-of-scope rate on val and test/, and the catch rate of every group of
        images that are not chest films (benchmarks/README.md, "Out-of-scope guard").

Run from the repository root with `nice -n 10`: it reads every film of the data set.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgexray.edge_runtime import REFERENCE_MODEL, readers  # noqa: E402
from edgexray.edge_runtime import scope as guard  # noqa: E402
from edgexray.edge_runtime.classifier import Classifier  # noqa: E402
from edgexray.edge_runtime.preprocess import resize  # noqa: E402
from edgexray.export import features  # noqa: E402
from edgexray.pipeline import data, scope  # noqa: E402
from edgexray.pipeline.train import TrainConfig  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chest_xray"
# The recorded run's split (docs/results.md, MODEL_CARD.md): a regenerated split that
# does not give these counts is not the one the model was trained on.
RECORDED = {
    "train": {"images": 4433, "patients": 2427},
    "val": {"images": 783, "patients": 419},
    "test": {"images": 312, "patients": 218},
}


def recorded_split(data_root: Path) -> list[data.Sample]:
    """The shipped model's train/val/test split, regenerated and checked."""
    config = TrainConfig(data=str(data_root))
    samples, _ = data.scan(data_root)
    samples = data.split_by_patient(samples, config.val_fraction, config.test_fraction, config.seed)
    counts = data.split_counts(samples)
    for split, expected in RECORDED.items():
        got = {key: counts[split][key] for key in expected}
        if got != expected:
            raise SystemExit(f"error: the regenerated {split} split is {got}, not {expected}")
    return samples


def counts_of(samples, split: str) -> dict:
    members = [s for s in samples if s.split == split]
    return {"films": len(members), "patients": len({s.patient_id for s in members})}


def reference(data_root: Path) -> None:
    samples = recorded_split(data_root)
    model = REFERENCE_MODEL
    classifier = Classifier(model, check_scope=False)
    spec = classifier.sidecar["input"]
    test_paths, _ = data.select(samples, "test", data_root)
    test_grays = scope.resized(test_paths, spec)

    def first_output(classifier) -> list[int]:
        values = []
        for gray in test_grays:
            classifier.run(classifier.tensor_of(gray))
            raw = classifier.interpreter.get_tensor(classifier.output_detail["index"])
            values.append(int(raw.reshape(-1)[0]))
        return values

    before = first_output(classifier)
    train_paths, _ = data.select(samples, "train", data_root)
    val_paths, _ = data.select(samples, "val", data_root)
    started = time.monotonic()
    block = features.add_guard(
        model,
        scope.resized(train_paths, spec),
        scope.resized(val_paths, spec),
        train_counts=counts_of(samples, "train"),
        val_counts=counts_of(samples, "val"),
    )
    after = first_output(Classifier(model, check_scope=False))
    changed = sum(a != b for a, b in zip(before, after, strict=True))
    print(f"re-exported {model} in {time.monotonic() - started:.0f} s")
    print(f"first output (uint8 logit) on {len(before)} test/ films: {changed} differ")
    print(f"cut-off {block['cutoff']:.4f}: {block['cutoff_rule']}")
    if changed:
        raise SystemExit("error: the re-exported model changed some predictions")


# --- measuring ---------------------------------------------------------------------------


def dicom_films(name: str, frames=(None,)) -> list:
    """A packaged DICOM file read by the edge runtime's own DICOM reader (the rendering
    rule of issue 18); a multi-frame file, which the reader refuses, frame by frame
    through the same rule."""
    import pydicom
    from pydicom.data import get_testdata_file

    from edgexray.edge_runtime.readers import dicom

    path = Path(get_testdata_file(name))
    if frames == (None,):
        gray, info = dicom.read_film(path)
        return [Film(name, gray, tags=info["tags"])]
    dataset = pydicom.dcmread(path)
    tags = {key: str(dataset.get(key)) for key in dicom.TAGS if dataset.get(key) not in (None, "")}
    films = []
    for frame in frames:
        gray, _ = dicom.render(dataset, dataset.pixel_array[frame], name)
        films.append(Film(f"{name} frame {frame}", gray, tags=tags))
    return films


# Which packaged images stand for which group: (file, frames). Checked by eye and by tag.
OTHER_RADIOGRAPHS = (("RG3_UNCR.dcm", (None,)),)  # CR, BodyPartExamined EXTREMITY: a leg
ADULT_CHEST = (("RG1_UNCR.dcm", (None,)),)  # CR, CHEST, PA, MONOCHROME1, born 1940
CT_MR = (
    ("CT_small.dcm", (None,)),
    ("MR_small.dcm", (None,)),
    ("693_UNCR.dcm", (None,)),
    ("MR2_UNCR.dcm", (None,)),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", (None,)),
    ("J2K_pixelrep_mismatch.dcm", (None,)),
    ("explicit_VR-UN.dcm", (None,)),
    ("examples_overlay.dcm", (None,)),
    ("eCT_Supplemental.dcm", (0, 1)),
    ("emri_small.dcm", tuple(range(10))),
)
NUCLEAR = (("JPEG-LL.dcm", (None,)), ("JPEG2000_UNC.dcm", (None,)))  # NM whole-body bone


class Film:
    """One image as the guard sees it: the decoded grey film, and its colour."""

    def __init__(self, name: str, gray: np.ndarray, colour: float | None = None, tags=None):
        self.name, self.gray, self.colour, self.tags = name, gray, colour, tags


def photographs() -> list[Film]:
    """Every photograph bundled inside scikit-image (data folder) and matplotlib."""
    import matplotlib
    import skimage

    folders = [Path(skimage.__file__).parent / "data"]
    files = sorted(p for p in folders[0].iterdir() if p.suffix in (".png", ".jpg"))
    files.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    films = []
    for path in files:
        gray, info = readers.read(path)
        films.append(Film(path.name, gray, info.get("colour")))
    return films


def matplotlib_mr() -> Film:
    """matplotlib's s1045.ima.gz: a 256 x 256 16-bit MR slice of a head."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz"
    raw = np.frombuffer(gzip.open(path).read(), "<u2").reshape(256, 256).astype(np.float64)
    return Film("s1045.ima (matplotlib)", np.round(raw / raw.max() * 255).astype(np.uint8))


def synthetic(rng) -> list[Film]:
    """Blank, noise and smooth-noise images, 20 of each kind, 224 x 224."""
    from PIL import Image

    films = []
    for k in range(20):
        films.append(Film(f"blank {k * 12}", np.full((224, 224), k * 12, np.uint8)))
        films.append(Film(f"uniform noise {k}", rng.integers(0, 256, (224, 224), np.uint8)))
        normal = rng.normal(128, 10 + 3 * k, (224, 224))
        films.append(Film(f"gaussian noise {k}", np.clip(normal, 0, 255).astype(np.uint8)))
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8), np.uint8))
        films.append(
            Film(f"smooth noise {k}", np.asarray(coarse.resize((224, 224), Image.BILINEAR)))
        )
    return films


def cropped(paths: list[str], rng, keep: float) -> list[Film]:
    """A window of `keep` of each side of every third test/ film, at a random place,
    saved back at the film's size (as a user's crop-and-export would)."""
    from PIL import Image

    films = []
    for path in paths[::3]:
        gray = readers.read(path)[0]
        height, width = gray.shape
        h, w = max(1, int(height * keep)), max(1, int(width * keep))
        top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        window = Image.fromarray(gray[top : top + h, left : left + w])
        films.append(Film(Path(path).name, np.asarray(window.resize((width, height)))))
    return films


def decisions(classifier: Classifier, films: list[Film], tags: bool = True) -> list:
    """The guard's decision for each film; tags=False judges the pixels alone (as the same
    film exported to PNG would be)."""
    spec = classifier.sidecar["input"]
    found = []
    for film in films:
        gray = resize(film.gray, int(spec["height"]), int(spec["width"]))
        classifier.run(classifier.tensor_of(gray))
        info = {"colour": film.colour, "tags": film.tags if tags else None}
        found.append(classifier.scope_decision(gray, info))
    return found


KINDS = {
    "looks": "turned or negative",
    "DICOM": "tags",
    "patient aged": "age",
    "colour": "colour",
    "flat": "flat",
    "feature": "features",
}


def reasons(found: list[guard.Decision]) -> dict:
    """How many films each check refused (the first reason counts)."""
    tally = {}
    for decision in found:
        if decision.in_scope is False:
            kind = next((v for k, v in KINDS.items() if k in decision.reason), "other")
            tally[kind] = tally.get(kind, 0) + 1
    return tally


def groups(samples, data_root: Path, rng) -> dict:
    """name -> (films, expected in scope: True, False, or None for the adult question)."""
    test_paths, _ = data.select(samples, "test", data_root)
    val_paths, _ = data.select(samples, "val", data_root)

    def films_of(paths, change=lambda gray: gray):
        return [Film(Path(p).name, change(readers.read(p)[0])) for p in paths]

    def packaged(table):
        return [film for name, frames in table for film in dicom_films(name, frames)]

    return {
        "val films (in scope)": (films_of(val_paths), True),
        "test/ films (in scope)": (films_of(test_paths), True),
        "test/ films inverted (negatives)": (films_of(test_paths, lambda g: 255 - g), False),
        "other body parts: RG3, a leg (CR)": (packaged(OTHER_RADIOGRAPHS), False),
        "CT and MR slices": (packaged(CT_MR) + [matplotlib_mr()], False),
        "nuclear medicine (NM whole-body bone)": (packaged(NUCLEAR), False),
        "photographs (scikit-image, matplotlib)": (photographs(), False),
        "blank and noise": (synthetic(rng), False),
        "test/ films cropped to 1/4 of each side": (cropped(test_paths, rng, 0.25), False),
        "test/ films cropped to 1/2 of each side": (cropped(test_paths, rng, 0.5), False),
        "adult chest: RG1 (CR, PA, aged 64)": (packaged(ADULT_CHEST), None),
    }


def measure(data_root: Path, model: Path, out: Path | None) -> dict:
    samples = recorded_split(data_root)
    classifier = Classifier(model)
    rng = np.random.default_rng(18)
    results = {}
    print(f"{'group':42s} {'films':>5} {'refused':>8} {'rate':>7} {'pixels only':>12}  by check")
    for name, (films, in_scope) in groups(samples, data_root, rng).items():
        found = decisions(classifier, films)
        pixels_only = decisions(classifier, films, tags=False)
        refused = sum(d.in_scope is False for d in found)
        refused_pixels = sum(d.in_scope is False for d in pixels_only)
        row = {
            "films": len(films),
            "expected": {True: "in scope", False: "out of scope", None: "decision"}[in_scope],
            "refused": refused,
            "refused_rate": round(refused / len(films), 4),
            "refused_pixels_only": refused_pixels,
            "by_check": reasons(found),
            "by_check_pixels_only": reasons(pixels_only),
        }
        wrong = [
            f.name
            for f, d in zip(films, found, strict=True)
            if in_scope is not None and (d.in_scope is False) == in_scope
        ]
        row["wrong" if in_scope is False else "refused_films"] = wrong[:50]
        distances = [d.distance for d in found if d.distance is not None]
        row["distance_min_median_max"] = [
            round(float(v), 2) for v in np.percentile(distances, [0, 50, 100])
        ]
        results[name] = row
        print(
            f"{name:42s} {len(films):5d} {refused:8d} {refused / len(films):7.1%} "
            f"{refused_pixels:12d}  {row['by_check']}"
        )
    report = {"model": str(model), "cutoff": classifier.scope["cutoff"], "groups": results}
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("reference", "measure"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=REFERENCE_MODEL)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.action == "reference":
        reference(args.data)
    else:
        measure(args.data, args.model, args.out)


if __name__ == "__main__":
    main()
