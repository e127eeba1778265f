"""One prune / QAT recipe on a trained run, judged on val only.

    python benchmarks/variant_trial.py TRAINED_RUN NAME '{"prune": {...}, "quantize": {...}}' \
        [--methods int8,qat,pqat,pruned-int8] [--pruned RUN] [--out DIR] [--results FILE]

Copies the trained run's model and split to OUT/NAME, prunes it with the given PruneConfig
fields, exports the given methods with the given QuantizeConfig fields, then asks
variant_holdup.py's question of every variant (the gate's rule on val films, as they are
and under each synthetic shift). One JSON line per recipe goes to --results: seconds of
the prune and quantize stages, the pruned model's val AUC, each variant's val AUC,
threshold and specificity, and its holdup summary. The test split is never read.

--pruned RUN copies RUN's pruned.keras and prune.json instead of pruning (prune is
deterministic on one machine): a round that varies only the quantize recipe saves the
prune's minutes per seed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from variant_holdup import holdup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trained", type=Path)
    parser.add_argument("name")
    parser.add_argument("recipe", help='JSON: {"prune": {PruneConfig fields}, "quantize": {...}}')
    parser.add_argument("--methods", default="int8,qat,pqat,pruned-int8")
    parser.add_argument("--pruned", type=Path, help="a run whose pruned model to reuse")
    parser.add_argument("--out", type=Path, default=Path("runs/variant-trials"))
    parser.add_argument("--results", type=Path, default=Path("runs/variant-trials/trials.jsonl"))
    args = parser.parse_args()

    from edgexray import artifacts
    from edgexray.export.quantize import QuantizeConfig, quantize
    from edgexray.pipeline.prune import PruneConfig, prune

    recipe = json.loads(args.recipe)
    if args.pruned and recipe.get("prune"):
        parser.error("--pruned reuses a pruned model: the recipe's prune fields would be ignored")
    run_dir = args.out / args.name
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    for name in (artifacts.CONFIG, artifacts.MANIFEST, artifacts.MODEL, artifacts.METRICS):
        shutil.copy(args.trained / name, run_dir / name)
    methods = args.methods.split(",")
    seconds = {}
    started = time.monotonic()
    pruned = None
    if args.pruned:
        for name in (artifacts.PRUNED, artifacts.PRUNE_REPORT):
            shutil.copy(args.pruned / name, run_dir / name)
        pruned = artifacts.read_json(run_dir / artifacts.PRUNE_REPORT)
    elif any(m in ("pqat", "pruned-int8") for m in methods):
        pruned = prune(run_dir, PruneConfig(**recipe.get("prune", {})), verbose=0)
    seconds["prune"] = round(time.monotonic() - started, 1)
    started = time.monotonic()
    variants = quantize(run_dir, methods, QuantizeConfig(**recipe.get("quantize", {})), verbose=0)
    seconds["quantize"] = round(time.monotonic() - started, 1)
    report = holdup(run_dir)
    row = {
        "name": args.name,
        "trained": str(args.trained),
        "recipe": recipe,
        "seconds": seconds,
        "variant_seconds": {v["method"]: v["seconds"] for v in variants},
        "pruned_val_auc": pruned["val"]["auc"] if pruned else None,
        "baseline_val_auc": pruned["baseline_val_auc"] if pruned else None,
        "val": {
            v["method"]: {k: v["val"][k] for k in ("auc", "threshold", "recall", "specificity")}
            for v in variants
        },
        "holdup": {
            name: {k: entry[k] for k in entry if k != "shifts"}
            for name, entry in report["variants"].items()
        },
        "load_average": os.getloadavg()[0],
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as out:
        out.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
