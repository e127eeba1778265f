"""The scope guard's orientation check (edge_runtime/scope.py TURNS), on the shipped model.

    python benchmarks/orientation_check.py attach     # once: its margin, chosen on val
    python benchmarks/orientation_check.py measure [--out results/orientation_check.json]

`attach` fits the check's margin on the recorded val split (the shipped model's own split,
regenerated and checked by scope_check.recorded_split) and writes it into the shipped
model's scope block: only the sidecar inside the file changes, the flatbuffer and so the
model's identity keep every byte. `measure` then runs the device's own decision
(Classifier.classify on each film held in memory) on the films of test/ as they are and
turned every way, and on half-side crops: test/ is looked at here only, after the margin
was chosen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scope_check import recorded_split  # noqa: E402

from edgexray import artifacts  # noqa: E402
from edgexray.benchmarks.machine import cpu_model_and_features  # noqa: E402
from edgexray.edge_runtime import REFERENCE_MODEL, readers  # noqa: E402
from edgexray.edge_runtime import scope as guard  # noqa: E402
from edgexray.edge_runtime.classifier import Classifier  # noqa: E402
from edgexray.pipeline import data  # noqa: E402
from edgexray.pipeline import scope as fitting  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "chest_xray"
# The films as they may arrive, as turns of the film read (full size, before resizing).
ARRIVALS = {
    "as they are": lambda film: film,
    "upside down (turned 180 degrees)": lambda film: film[::-1, ::-1],
    "flipped top to bottom": lambda film: film[::-1],
    "turned 90 degrees left": lambda film: np.rot90(film, 1),
    "turned 90 degrees right": lambda film: np.rot90(film, 3),
    "mirrored left to right": lambda film: film[:, ::-1],
    "centre half of each side": lambda film: film[
        film.shape[0] // 4 : film.shape[0] * 3 // 4, film.shape[1] // 4 : film.shape[1] * 3 // 4
    ],
}


def attach(data_root: Path) -> dict:
    samples = recorded_split(data_root)
    classifier = Classifier(REFERENCE_MODEL, check_scope=False)
    spec, block = classifier.sidecar["input"], dict(classifier.sidecar["scope"])
    val_paths, _ = data.select(samples, "val", data_root)
    val_grays = fitting.resized(val_paths, spec)
    statistics = guard.Statistics.of(block)
    val = fitting.features_of(classifier, val_grays)
    distances = np.array([statistics.distance(f) for f in val])
    turned = {
        turn.name: fitting.features_of(classifier, (turn.apply(g) for g in val_grays))
        for turn in guard.TURNS
    }
    block["orientation"] = fitting.orientation_block(statistics, block["cutoff"], distances, turned)
    artifacts.write_model(
        REFERENCE_MODEL, REFERENCE_MODEL.read_bytes(), {**classifier.sidecar, "scope": block}
    )
    return block["orientation"]


def measure(data_root: Path) -> dict:
    classifier = Classifier(REFERENCE_MODEL)
    films = []
    for label in ("NORMAL", "PNEUMONIA"):
        films += [(p, label) for p in readers.film_files(data_root / "test" / label)]
    rows = {}
    for arrival, change in ARRIVALS.items():
        refused, turned, by_label = 0, 0, {"NORMAL": [0, 0], "PNEUMONIA": [0, 0]}
        for path, label in films:
            film = readers.read(path)[0]
            record = classifier.classify(np.ascontiguousarray(change(film)), name=str(path))
            out = record.get("in_scope") is False
            refused += out
            turned += out and record["scope_reason"].startswith("looks upside down")
            by_label[label][0] += out
            by_label[label][1] += 1
        rows[arrival] = {
            "films": len(films),
            "refused": refused,
            "refused_as_turned": turned,
            "share_refused": round(refused / len(films), 4),
            "by_label": {k: {"refused": r, "films": n} for k, (r, n) in by_label.items()},
        }
        print(
            f"{arrival:34s} refused {refused:3d}/{len(films)} ({refused / len(films):.1%}), "
            f"{turned} of them as turned",
            flush=True,
        )
    return {
        "model": str(REFERENCE_MODEL.relative_to(ROOT)),
        "orientation": classifier.sidecar["scope"].get("orientation"),
        "cpu": cpu_model_and_features(),
        "arrivals": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("attach", "measure"))
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.step == "attach":
        print(json.dumps(attach(args.data), indent=2))
        return
    result = measure(args.data)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
