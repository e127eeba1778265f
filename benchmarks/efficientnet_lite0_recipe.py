"""Heads on cached EfficientNet-Lite0 features, scored on val only (issue 34, recipe A).

    python benchmarks/efficientnet_lite0_recipe.py DIR/features-equalize.npz
        [DIR/features-scale.npz ...] [--augmented DIR/features-equalize-site.npz]
        [--out FILE.json] [--head-out DIR]

For each cache of efficientnet_lite0_features.py (one input normalisation each): an
L2-regularised logistic regression on the standardised train features (the frozen
backbone's Dense(1) head, folded back onto the raw features), with and without label
smoothing 0.1 (the compact CNN's recipe), for a few strengths. Scored on val, the
training hospital: log-loss, AUC, ECE, and the specificity at the threshold chosen on val
for recall >= 0.97 (in sample, as the pipeline chooses it); then the shift stress test
(augment.SHIFTS on the val films) at that threshold, as train.shift_stress_test reports
it. --augmented adds the train films' features under draws of the "site" augmentation
(efficientnet_lite0_features.py --augmented) to the training rows of the cache of the same
normalisation: the head then learns from augmented films, as the trained CNN does. test/
is never read. --head-out writes each cache's head of least val log-loss (the Dense
layer's kernel and bias, raw features) as head-NORMALISATION[-site].npz.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgexray.pipeline import metrics, probe  # noqa: E402

STRENGTHS = (1e-3, 3e-3, 1e-2, 3e-2)  # L2 penalty per film, on standardised features
SMOOTHINGS = (0.0, 0.1)
TARGET_RECALL = 0.97  # TrainConfig's default target
KEYS = ("auc", "recall", "specificity")


def scores_of(features, kernel, bias) -> np.ndarray:
    return features.astype(np.float64) @ kernel + bias


def report(labels, logits, threshold: float) -> dict:
    probabilities = metrics.sigmoid(logits)
    at = metrics.classification_report(labels, probabilities, threshold)
    return {
        "log_loss": float(np.mean(np.logaddexp(0, -(2 * labels - 1) * logits))),
        "auc": metrics.roc_auc(labels, logits),
        "ece": metrics.expected_calibration_error(labels, probabilities),
        "recall": at["recall"],
        "specificity": at["specificity"],
    }


def heads(cache: Path, augmented: Path | None = None) -> dict:
    stored = np.load(cache)
    record = json.loads(str(stored["record"]))
    train, val = stored["train"].astype(np.float64), stored["val"].astype(np.float64)
    train_labels = stored["train labels"].astype(np.float64)
    if augmented is not None:
        extra = np.load(augmented)
        draws = [extra[key] for key in extra.files if key.startswith("train site ")]
        train = np.concatenate([train, *draws]).astype(np.float64)
        train_labels = np.tile(train_labels, 1 + len(draws))
    val_labels = stored["val labels"].astype(np.int64)
    rows = []
    for smoothing in SMOOTHINGS:
        for strength in STRENGTHS:
            kernel, bias = probe.linear_head(train, train_labels, strength, smoothing)
            logits = scores_of(val, kernel, bias)
            threshold = metrics.threshold_for_recall(
                val_labels, metrics.sigmoid(logits), TARGET_RECALL
            )
            row = {"smoothing": smoothing, "strength": strength, "threshold": threshold}
            row["val"] = report(val_labels, logits, threshold)
            shifted = {}
            for key in stored.files:
                if key.startswith("val shift "):
                    changed = report(val_labels, scores_of(stored[key], kernel, bias), threshold)
                    shifted[key.removeprefix("val shift ")] = {k: changed[k] for k in KEYS}
            if shifted:
                base = shifted["none"]
                row["shift_deltas"] = {
                    name: {k: round(m[k] - base[k], 4) for k in KEYS}
                    for name, m in shifted.items()
                    if name != "none"
                }
            row["head"] = (kernel, bias)
            rows.append(row)
    return {"spec": record["spec"], "machine": record["machine"]["cpu"], "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("caches", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--head-out", type=Path, default=None)
    parser.add_argument("--augmented", type=Path, default=None)
    args = parser.parse_args(argv)
    results = []
    for cache in args.caches:
        extra = None
        if args.augmented is not None:
            spec = json.loads(str(np.load(args.augmented)["record"]))["spec"]
            same = spec == json.loads(str(np.load(cache)["record"]))["spec"]
            extra = args.augmented if same else None
        found = heads(cache, extra)
        normalization = found["spec"]["normalization"] + ("-site" if extra else "")
        print(f"\n{cache.name} ({normalization})")
        print(" smooth  L2     logloss  AUC     ECE    spec@rec.97  worst shift Δspec (name)")
        for row in found["rows"]:
            val = row["val"]
            worst = min(row.get("shift_deltas", {}).items(), key=lambda kv: kv[1]["specificity"])
            print(
                f" {row['smoothing']:.1f}   {row['strength']:.0e}  {val['log_loss']:.4f}  "
                f"{val['auc']:.4f}  {val['ece']:.3f}  {val['specificity']:.4f}       "
                f"{worst[1]['specificity']:+.4f} ({worst[0]})"
            )
        best = min(found["rows"], key=lambda row: row["val"]["log_loss"])
        if args.head_out:
            args.head_out.mkdir(parents=True, exist_ok=True)
            kernel, bias = best["head"]
            np.savez(
                args.head_out / f"head-{normalization}.npz",
                kernel=kernel,
                bias=bias,
                threshold=best["threshold"],
                chosen=json.dumps({k: best[k] for k in ("smoothing", "strength")}),
            )
        for row in found["rows"]:
            row.pop("head")
        found["chosen_by_val_log_loss"] = {k: best[k] for k in ("smoothing", "strength")}
        augmented = extra.name if extra else None
        results.append({"cache": cache.name, "augmented": augmented, **found})
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
