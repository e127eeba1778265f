"""What fine-tuning Lite0's blocks 11-15 buys over a head on frozen features (issue 34).

    nice -n 15 python benchmarks/efficientnet_lite0_finetune.py train --head HEAD.npz
        --out DIR/finetune.weights.h5 [--epochs 2] [--learning-rate 1e-4]
        [--normalization equalize] [--data DIR]
    nice -n 15 python benchmarks/efficientnet_lite0_finetune.py score
        --weights DIR/finetune.weights.h5 --out DIR/finetune-scores.json [--data DIR]

train: the grey 224 px Lite0 with its ImageNet weights and the head of
efficientnet_lite0_recipe.py --head-out (a linear probe first, then fine-tuning: the head
does not start random), blocks 11-15, the head convolution and the Dense head trainable,
everything before block 11 frozen, every BatchNormalization frozen in inference mode (the
usual way to fine-tune an EfficientNet on a small set), on the recorded run's train split
with the run's "site" augmentation and balanced class weights (as finetune.fit does),
Adam with a cosine decay, no label smoothing (so val log-loss compares with the heads').
score: val, and val under every shift of the stress test, as efficientnet_lite0_recipe.py
scores its heads. test/ is never read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from efficientnet_lite0_recipe import KEYS, TARGET_RECALL, report  # noqa: E402
from scope_check import DEFAULT_DATA, recorded_split  # noqa: E402

from edgexray.benchmarks.machine import machine_info  # noqa: E402
from edgexray.pipeline import augment, data, metrics, scoring  # noqa: E402

SIZE = 224
BATCH = 32


def lite0(head: Path | None):
    from edgexray.pipeline.backbones import efficientnet_lite

    model = efficientnet_lite.for_films(SIZE)
    if head is not None:
        stored = np.load(head)
        model.layers[-1].set_weights(
            [stored["kernel"].reshape(-1, 1).astype(np.float32), np.array([float(stored["bias"])])]
        )
    return model


def train(args) -> None:
    from edgexray.compat import keras, tf
    from edgexray.pipeline.finetune import class_weights

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.keras.utils.set_random_seed(42)
    samples = recorded_split(args.data)
    spec = {"height": SIZE, "width": SIZE, "normalization": args.normalization}
    paths, labels = data.select(samples, "train", args.data)
    model = lite0(args.head)
    steps = args.epochs * int(np.ceil(len(paths) / BATCH))
    schedule = keras.optimizers.schedules.CosineDecay(args.learning_rate, steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    weights = class_weights(labels)
    train_set = data.make_dataset(
        paths, labels, spec, BATCH, training=True, seed=42, augmentation="site",
        class_weights=weights,
    )  # fmt: skip
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"{trainable} trainable weights, {steps} steps", flush=True)
    started = time.monotonic()
    history = model.fit(train_set, epochs=args.epochs, class_weight=weights, verbose=2)
    seconds = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(args.out)
    record = {
        "machine": machine_info(),
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "normalization": args.normalization,
        "trainable_weights": trainable,
        "train_seconds": round(seconds, 1),
        "loss": [round(v, 4) for v in history.history["loss"]],
        "load_average_at_end": list(os.getloadavg()),
    }
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["loss"]), f"{seconds:.0f} s")


def score(args) -> None:
    from edgexray.compat import tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    record = json.loads(args.weights.with_suffix(".json").read_text())
    samples = recorded_split(args.data)
    spec = {"height": SIZE, "width": SIZE, "normalization": record["normalization"]}
    paths, labels = data.select(samples, "val", args.data)
    model = lite0(None)
    model.load_weights(args.weights)

    def logits(change=None) -> np.ndarray:
        rows = []
        for start in range(0, len(paths), BATCH):
            batch = [scoring.decode(p, spec, change) for p in paths[start : start + BATCH]]
            rows.append(model.predict_on_batch(np.stack(batch)).reshape(-1))
        return np.concatenate(rows).astype(np.float64)

    started = time.monotonic()
    plain = logits()
    threshold = metrics.threshold_for_recall(labels, metrics.sigmoid(plain), TARGET_RECALL)
    result = {"trained": record, "threshold": threshold, "val": report(labels, plain, threshold)}
    print(result["val"], flush=True)
    shifted = {}
    for name, change in augment.SHIFTS.items():
        changed = report(labels, plain if name == "none" else logits(change), threshold)
        shifted[name] = {k: changed[k] for k in KEYS}
    result["shift_deltas"] = {
        name: {k: round(m[k] - shifted["none"][k], 4) for k in KEYS}
        for name, m in shifted.items()
        if name != "none"
    }
    result["score_seconds"] = round(time.monotonic() - started, 1)
    for name, delta in result["shift_deltas"].items():
        print(f"{name:22s} {delta}")
    args.out.write_text(json.dumps(result, indent=1) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("train", "score"))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--head", type=Path)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--normalization", default="equalize")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    train(args) if args.action == "train" else score(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
