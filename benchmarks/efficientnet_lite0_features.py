"""Cache EfficientNet-Lite0's frozen ImageNet features of the recorded split (issue 34, recipe A).

    nice -n 15 python benchmarks/efficientnet_lite0_features.py --out DIR/features-equalize.npz
        [--normalization equalize|scale] [--size 224] [--shifts] [--augmented N] [--data DIR]

The recorded run's split (benchmarks/scope_check.py: seed 42, TrainConfig defaults). Every
train and val film goes once through the grey 1-channel Lite0 with its ImageNet weights,
in float (Keras, inference mode), to its 1280 pooled features; with --shifts, the val
films also under every acquisition change of the shift stress test (augment.SHIFTS,
applied to the resized 8-bit film before normalisation, as train.shift_stress_test does);
with --augmented N, the train films also N more times, each time through a fresh draw of
the training's "site" augmentation (augment.AUGMENTATIONS, seeded by draw and film).
test/ is not read. efficientnet_lite0_recipe.py fits and scores heads on these.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from scope_check import DEFAULT_DATA, recorded_split  # noqa: E402

from edgexray.benchmarks.machine import machine_info  # noqa: E402
from edgexray.pipeline import augment, data, scoring  # noqa: E402

BATCH = 32


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def features_of(model, paths: list[str], spec: dict, change=None) -> np.ndarray:
    rows = []
    for start in range(0, len(paths), BATCH):
        batch = [scoring.decode(p, spec, change) for p in paths[start : start + BATCH]]
        rows.append(model.predict_on_batch(np.stack(batch)))
    return np.concatenate(rows).astype(np.float32)


def augmented_features(model, paths, spec, name: str, draw: int) -> np.ndarray:
    policy = augment.AUGMENTATIONS[name]
    rows = []
    for start in range(0, len(paths), BATCH):
        batch = []
        for index in range(start, min(start + BATCH, len(paths))):
            rng = np.random.default_rng([draw, index])
            batch.append(scoring.decode(paths[index], spec, lambda g, r=rng: policy(g, r)))
        rows.append(model.predict_on_batch(np.stack(batch)))
    return np.concatenate(rows).astype(np.float32)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--normalization", default="equalize", choices=("equalize", "scale"))
    parser.add_argument("--shifts", action="store_true", help="also val under augment.SHIFTS")
    parser.add_argument("--augmented", type=int, default=0, help="site-augmented train draws")
    parser.add_argument("--only-augmented", action="store_true", help="skip train and val")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    from edgexray.compat import tf
    from edgexray.pipeline.backbones import efficientnet_lite

    tf.config.threading.set_intra_op_parallelism_threads(2)
    samples = recorded_split(args.data)
    spec = {"height": args.size, "width": args.size, "normalization": args.normalization}
    model = efficientnet_lite.build(args.size, channels=1)
    efficientnet_lite.load_imagenet_weights(model)
    arrays, timings = {}, {}
    jobs = [] if args.only_augmented else [(split, split, None) for split in ("train", "val")]
    for draw in range(args.augmented):
        jobs.append((f"train site {draw}", "train", ("site", draw)))
    if args.shifts:
        jobs += [(f"val shift {name}", "val", change) for name, change in augment.SHIFTS.items()]
    for key, split, change in jobs:
        paths, labels = data.select(samples, split, args.data)
        wall, cpu = time.perf_counter(), cpu_seconds()
        if isinstance(change, tuple):  # a draw of the training augmentation per film
            arrays[key] = augmented_features(model, paths, spec, *change)
        else:
            arrays[key] = features_of(model, paths, spec, change)
        arrays[f"{split} labels"] = labels
        timings[key] = {
            "films": len(paths),
            "wall_s": round(time.perf_counter() - wall, 1),
            "cpu_s": round(cpu_seconds() - cpu, 1),
        }
        print(key, timings[key], flush=True)
    record = {
        "machine": machine_info(),
        "spec": spec,
        "timings": timings,
        "load_average_at_end": list(os.getloadavg()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_suffix(".part.npz")
    np.savez(temporary, record=json.dumps(record), **arrays)
    temporary.replace(args.out)
    print(json.dumps(record["timings"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
