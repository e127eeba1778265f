"""How far frozen ImageNet features go: a linear probe on EfficientNet-Lite0 (issue 34).

    nice -n 10 python benchmarks/efficientnet_lite0_probe.py [--size 224] [--data DIR]
        [--normalization equalize] [--out FILE.json]

The recorded run's split (benchmarks/scope_check.py: seed 42, TrainConfig defaults). Every
train and val film goes once through the grey 1-channel Lite0 with its ImageNet weights
to the 1280 pooled features; an L2-regularised logistic regression on the standardised
train features is then scored on val, for a few regularisation strengths. Only val is
looked at: this informs the recipe, it chooses nothing for test/. Also reported: how many
principal components of the train features hold 90/95/99% of their variance (the scope
guard's statistics would live in such a subspace).
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
from edgexray.pipeline import data, metrics, probe, scoring  # noqa: E402

STRENGTHS = (1e-4, 1e-3, 1e-2, 1e-1)  # L2 penalty per film, on standardised features
BATCH = 32


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def features_of(model, paths: list[str], spec: dict) -> np.ndarray:
    rows = []
    for start in range(0, len(paths), BATCH):
        batch = np.stack([scoring.decode(p, spec) for p in paths[start : start + BATCH]])
        rows.append(model.predict_on_batch(batch))
    return np.concatenate(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--normalization", default="equalize")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from edgexray.compat import tf
    from edgexray.pipeline.backbones import efficientnet_lite

    tf.config.threading.set_intra_op_parallelism_threads(2)
    samples = recorded_split(args.data)
    spec = {"height": args.size, "width": args.size, "normalization": args.normalization}
    model = efficientnet_lite.build(args.size, channels=1)
    efficientnet_lite.load_imagenet_weights(model)
    result = {"machine": machine_info(), "size": args.size, "spec": spec, "probes": []}
    split_features = {}
    for split in ("train", "val"):
        paths, labels = data.select(samples, split, args.data)
        wall, cpu = time.perf_counter(), cpu_seconds()
        split_features[split] = (features_of(model, paths, spec), labels.astype(np.float64))
        result[f"{split}_features"] = {
            "films": len(paths),
            "wall_s": time.perf_counter() - wall,
            "cpu_s": cpu_seconds() - cpu,
        }
        print(split, result[f"{split}_features"], flush=True)
    train, train_labels = split_features["train"]
    val, val_labels = split_features["val"]
    mean, spread = train.mean(0), train.std(0) + 1e-6
    standard_train, standard_val = (train - mean) / spread, (val - mean) / spread
    for strength in STRENGTHS:
        weights = probe.logistic(standard_train, train_labels, strength)
        scores = standard_val @ weights[:-1] + weights[-1]
        probabilities = 1 / (1 + np.exp(-scores))
        threshold = metrics.threshold_for_recall(val_labels, probabilities, 0.97)
        report = metrics.classification_report(val_labels, probabilities, threshold)
        row = {
            "strength": strength,
            "val_auc": metrics.roc_auc(val_labels, scores),
            "val_log_loss": float(np.logaddexp(0, -(2 * val_labels - 1) * scores).mean()),
            "val_specificity_at_recall_0.97_in_sample": report["specificity"],
        }
        result["probes"].append(row)
        print(row, flush=True)
    centred = train - train.mean(0)
    variances = np.linalg.svd(centred, compute_uv=False) ** 2
    cumulative = np.cumsum(variances) / variances.sum()
    result["components_for_variance"] = {
        str(share): int(np.searchsorted(cumulative, share) + 1) for share in (0.9, 0.95, 0.99)
    }
    result["dead_features"] = int(np.sum(train.std(0) < 1e-6))
    print(result["components_for_variance"], "dead", result["dead_features"])
    result["load_average_at_end"] = list(os.getloadavg())
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
