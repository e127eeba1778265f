"""The scope guard's negative check on a trained run's int8 model, on val only.

    python benchmarks/negative_check.py RUN_DIR OUT_DIR [--json FILE]

Copies RUN_DIR/tflite/int8.tflite to OUT_DIR, fits its scope block again with today's
TURNS (edge_runtime/scope.py: upside down, flipped, negative) on the run's own train
and val films (`data.run_split`, from the decode cache training filled), and prints for
the val films as negatives the share the cut-off alone refuses and the share the guard refuses
with the check, with the margin the block chose and the upright val films it refuses.
Nothing here reads test/; `scope_check.py measure --model OUT_DIR/int8.tflite` does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgexray.edge_runtime.classifier import Classifier  # noqa: E402
from edgexray.edge_runtime.scope import TURN_NAMES, Statistics  # noqa: E402
from edgexray.pipeline import data, scope  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--json", type=Path, default=None, help="append one line of results")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.out / "int8.tflite"
    for suffix in (".tflite", ".json"):
        shutil.copy(args.run / "tflite" / f"int8{suffix}", model.with_suffix(suffix))
    spec = Classifier(model, check_scope=False).sidecar["input"]
    grays = {s: scope.resized(data.run_split(args.run, s)[0], spec) for s in ("train", "val")}
    started = time.monotonic()
    block = scope.attach(model, grays["train"], grays["val"])
    seconds = time.monotonic() - started
    classifier = Classifier(model, check_scope=False)
    statistics = Statistics.of(block)
    negative = TURN_NAMES["negative"].apply
    negatives = scope.features_of(classifier, (negative(g) for g in grays["val"]))
    beyond = np.mean([statistics.distance(f) > block["cutoff"] for f in negatives])
    orientation = block.get("orientation") or {}
    result = {
        "run": str(args.run),
        "backbone": json.loads((args.run / "config.json").read_text()).get("backbone", "compact"),
        "val_films": len(grays["val"]),
        "cutoff": block["cutoff"],
        "val_negatives_beyond_cutoff": round(float(beyond), 4),
        "turns": orientation.get("turns"),
        "margin": orientation.get("margin"),
        "val_turned_caught": (orientation.get("chosen_on") or {}).get("turned_caught"),
        "upright_val_films_called_turned": (orientation.get("chosen_on") or {}).get("refused"),
        "attach_seconds": round(seconds, 1),
    }
    print(json.dumps(result))
    if args.json:
        with args.json.open("a") as out:
            out.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
