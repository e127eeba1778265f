"""One training recipe, judged on val only: val AUC, epochs and seconds.

    python benchmarks/speed_trial.py NAME '{"stem": "strided", "batch_size": 64}' \
        [--data DIR] [--runs DIR] [--results FILE]

Trains with `edgexray.pipeline.train.train` and the given TrainConfig changes and appends
one JSON line to --results: the val AUC of the best epoch (the checkpoint train keeps), the
best epoch, the epochs run, the seconds of training (scan and fit) and of the whole call,
the load average before and after. The test split is never read here: recipes for speed
are chosen on val (benchmarks/README.md, "Speed").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("overrides", help="JSON object of TrainConfig fields")
    parser.add_argument("--data", default="../shared/data/chest_xray")
    parser.add_argument("--runs", default="runs/speed-trials")
    parser.add_argument("--results", default="runs/speed-trials/trials.jsonl")
    args = parser.parse_args()

    from edgexray.pipeline.train import TrainConfig, train

    overrides = json.loads(args.overrides)
    config = TrainConfig(data=str(Path(args.data).resolve()), **overrides)
    run_dir = Path(args.runs) / args.name
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    summary = train(config, run_dir, verbose=2)
    seconds = time.monotonic() - started
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    history = summary["history"]
    row = {
        "name": args.name,
        "overrides": overrides,
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "val_auc": summary["val"]["at_threshold"]["auc"],
        "val_auc_by_epoch": history.get("val_auc"),
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "train_seconds": summary["train_seconds"],
        "seconds": round(seconds, 1),
        "temperature": summary["temperature"],
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "val_auc_by_epoch"}))


if __name__ == "__main__":
    main()
