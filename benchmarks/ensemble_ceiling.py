"""What several models together would give: the ceiling of distilling teachers into one.

Averages the logits of finished ablation runs that share one patient split (the same
seed, so no teacher saw another's val films), picks the threshold on val for recall
>= target as training does, and scores test/. Nothing here is shipped: an ensemble of
k models costs k times the size and latency, and training k teachers does not fit the
20-minute run. It answers "would distillation be worth building?".

    python benchmarks/ensemble_ceiling.py A1-site A2-site-ls B2-weight-average [--runs DIR]

Appends one JSON line per call to benchmarks/results/ensemble_ceiling.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ablation import HEADLINE, specificity_at_recall  # this folder is on sys.path

RESULTS = Path(__file__).resolve().parent / "results" / "ensemble_ceiling.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", help="ablation run names")
    parser.add_argument("--runs", default="runs/ablation")
    args = parser.parse_args()

    from edgexray import artifacts
    from edgexray.edge_runtime.interpreter import sigmoid
    from edgexray.pipeline import data, metrics, scoring
    from edgexray.pipeline.train import load_config

    logits = {"val": [], "test": []}
    labels, splits = {}, set()
    for name in args.members:
        run_dir = Path(args.runs) / name
        config = load_config(run_dir)
        samples = data.load_manifest(run_dir / "manifest.csv")
        splits.add(tuple((s.path, s.split) for s in samples))
        model = artifacts.load_keras(run_dir / artifacts.MODEL)
        for split in logits:
            paths, labels[split] = data.select(samples, split, Path(config.data))
            probabilities = scoring.keras_probabilities(model, paths, config.input_spec)
            logits[split].append(metrics.logit(probabilities))
    if len(splits) != 1:
        raise SystemExit("error: the members were trained on different splits (seeds)")

    # The ensemble's probability: the sigmoid of the members' mean logit.
    ensemble = {split: sigmoid(np.mean(logits[split], axis=0)) for split in logits}
    target = config.target_recall
    threshold = metrics.threshold_for_recall(labels["val"], ensemble["val"], target)
    test = metrics.classification_report(labels["test"], ensemble["test"], threshold)
    row = {
        "members": args.members,
        "val_auc": metrics.roc_auc(labels["val"], ensemble["val"]),
        "threshold": threshold,
        "test": {k: test[k] for k in HEADLINE},
        "test_spec_at_recall_hindsight": specificity_at_recall(
            labels["test"], ensemble["test"], target
        ),
        "members_test_auc": [metrics.roc_auc(labels["test"], member) for member in logits["test"]],
    }
    with open(RESULTS, "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
