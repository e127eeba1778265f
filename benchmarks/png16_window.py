"""16-bit PNG films with a hot pixel or a burned-in marker: min-max against the percentile window.

Each test/ film (8-bit grey, as the project reads it) is made a 12-bit film in a 16-bit PNG
(v * 16 + 5, as a unit exporting 12 bits writes it), then spoiled by one hot pixel, or by a
marker of 0.2% of the film, at full scale (65535). For each, the grey levels left before
equalisation and the shipped model's probability, rendered by the previous rule (min-max)
and by infer.py's (window on the 0.5th-99.5th percentiles), against the clean 8-bit film.

    nice -n 10 python benchmarks/png16_window.py [--data ../shared/data/chest_xray/test]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray" / "test"


def min_max(values: np.ndarray) -> np.ndarray:
    """The previous rule: the 16-bit range present stretched to 0..255."""
    values = values.astype(np.float32)
    low, high = float(values.min()), float(values.max())
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def spoil(values: np.ndarray, how: str) -> np.ndarray:
    spoiled = values.copy()
    if how == "hot pixel":
        spoiled[3, 4] = 65535
    else:  # a marker at full scale over 0.2% of the film, near a corner
        rows, columns = spoiled.shape
        height = max(1, rows // 20)
        width = max(1, int(0.002 * rows * columns / height))
        spoiled[5 : 5 + height, 5 : 5 + width] = 65535
    return spoiled


def levels(gray: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(gray.ravel(), minlength=256)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NORMAL/ PNEUMONIA/")
    args = parser.parse_args()

    from edgexray.edge_runtime import REFERENCE_MODEL, readers
    from edgexray.edge_runtime.classifier import Classifier
    from edgexray.edge_runtime.preprocess import resize

    classifier = Classifier(REFERENCE_MODEL)
    spec = classifier.sidecar["input"]

    def probability(gray: np.ndarray) -> float:
        small = resize(gray, int(spec["height"]), int(spec["width"]))
        return classifier.run(classifier.tensor_of(small))

    films = [p for label in ("NORMAL", "PNEUMONIA") for p in readers.film_files(args.data / label)]
    found, own_levels = {}, []
    with tempfile.TemporaryDirectory(prefix="png16 ") as work:
        png = Path(work) / "film.png"
        for path in films:
            film = readers.read(path)[0]
            own_levels.append(levels(film))
            reference = probability(film)
            twelve_bit = film.astype(np.uint16) * 16 + 5
            for how in ("hot pixel", "marker 0.2%"):
                spoiled = spoil(twelve_bit, how)
                Image.fromarray(spoiled).save(png)
                rules = {"min-max": min_max(spoiled), "p0.5-p99.5": readers.read(png)[0]}
                for rule, gray in rules.items():
                    row = found.setdefault((how, rule), {"levels": [], "dp": [], "flips": 0})
                    p = probability(gray)
                    row["levels"].append(levels(gray))
                    row["dp"].append(abs(p - reference))
                    threshold = classifier.threshold
                    row["flips"] += (p >= threshold) != (reference >= threshold)
    print(
        f"{len(films)} films of {args.data}; model {REFERENCE_MODEL.name}; the films "
        f"themselves have {int(np.median(own_levels))} grey levels (median)"
    )
    print("| spoiled by | rule | grey levels left (median, min) | max abs dp | label flips |")
    print("|---|---|---|---|---|")
    for (how, rule), row in found.items():
        print(
            f"| {how} | {rule} | {int(np.median(row['levels']))}, {min(row['levels'])} | "
            f"{max(row['dp']):.4f} | {row['flips']} |"
        )


if __name__ == "__main__":
    main()
