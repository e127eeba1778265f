"""Does each variant hold against the float model at a new site? Asked of val alone.

    python benchmarks/variant_holdup.py RUN_DIR [RUN_DIR ...] [--json FILE]

The recall gate (`edgexray verify`) judges variants on test/, another site, which must
not choose recipes. This applies the same rule (no recall drop, specificity drop <= 0.10,
AUC drop <= 0.01, each model at its threshold under a rule of RULES: its own val
threshold, the float model's where that is lower, or one that catches N more val
pneumonia films than the float model's) to the VAL films, as they are and
under each synthetic acquisition shift of `augment.SHIFTS` (brighter, darker, blurred,
resampled, re-compressed...), and reports per variant the worst drop over the shifts and
how many shifts it would fail. All models are scored in one pass over the films per
shift. Films count: one val pneumonia film is about 0.0017 of recall, one normal film
about 0.005 of specificity.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _own(thresholds, labels, probabilities, target_recall):
    return thresholds


def _float(thresholds, labels, probabilities, target_recall):
    # never above the variant's own: its val recall stays >= the target
    return [thresholds[0]] + [min(t, thresholds[0]) for t in thresholds[1:]]


def _more_films(films: int):
    """Each variant's threshold flags `films` more val pneumonia films (as they are) than
    the target recall needs, as `edgexray quantize --recall-margin-films` chooses it."""

    def rule(thresholds, labels, probabilities, target_recall):
        from edgexray.pipeline import metrics

        return [thresholds[0]] + [
            metrics.threshold_for_recall(labels, p, target_recall, films) for p in probabilities[1:]
        ]

    return rule


# name -> thresholds of [float model, variants...] from their own ones, the val films'
# probabilities as they are and the run's target recall
RULES = {"own": _own, "float": _float, **{f"plus{n}": _more_films(n) for n in (1, 2, 3, 4)}}


def holdup(run_dir: Path, rule: str = "own") -> dict:
    """One rule's report (see `holdups`)."""
    return holdups(run_dir, (rule,))[rule]


def holdups(run_dir: Path, rules=("own",)) -> dict:
    """rule -> report, the models scored once for all rules."""
    from edgexray import artifacts
    from edgexray.pipeline import augment, data
    from edgexray.pipeline.evaluate import load_model
    from edgexray.pipeline.scoring import score
    from edgexray.pipeline.verify import GateLimits

    limits = GateLimits()
    paths, labels = data.run_split(run_dir, "val")
    target_recall = artifacts.read_json(run_dir / artifacts.CONFIG)["target_recall"]
    models = [load_model(run_dir / artifacts.MODEL)] + [
        load_model(p) for p in sorted((run_dir / artifacts.TFLITE_DIR).glob("*.tflite"))
    ]
    names = [m.path.stem if m.kind == "tflite" else "model.keras" for m in models]
    by_shift = {
        shift: score([m.scorer for m in models], paths, labels, change).probabilities
        for shift, change in augment.SHIFTS.items()
    }
    return {
        rule: _judge(
            names,
            RULES[rule]([m.threshold for m in models], labels, by_shift["none"], target_recall),
            by_shift,
            labels,
            limits,
            run_dir,
            rule,
        )
        for rule in rules
    }


def _judge(names, thresholds, by_shift, labels, limits, run_dir, rule) -> dict:
    from edgexray.pipeline import metrics

    result = {
        name: {"threshold": t, "shifts": {}}
        for name, t in zip(names[1:], thresholds[1:], strict=True)
    }
    for shift, probabilities in by_shift.items():
        reports = [
            metrics.classification_report(labels, p, t)
            for t, p in zip(thresholds, probabilities, strict=True)
        ]
        base = reports[0]
        for name, report in zip(names[1:], reports[1:], strict=True):
            drops = {k: base[k] - report[k] for k in ("recall", "specificity", "auc")}
            fails = (
                drops["recall"] > limits.max_recall_drop + 1e-9
                or drops["specificity"] > limits.max_specificity_drop + 1e-9
                or drops["auc"] > limits.max_auc_drop + 1e-9
            )
            result[name]["shifts"][shift] = {
                **{f"{k}_drop": round(v, 4) for k, v in drops.items()},
                "fails": bool(fails),
            }
    for entry in result.values():
        shifts = entry["shifts"].values()
        entry["worst_recall_drop"] = max(s["recall_drop"] for s in shifts)
        entry["worst_specificity_drop"] = max(s["specificity_drop"] for s in shifts)
        entry["worst_auc_drop"] = max(s["auc_drop"] for s in shifts)
        entry["shifts_failed"] = int(np.sum([s["fails"] for s in shifts]))
        entry["mean_abs_specificity_change"] = round(
            float(np.mean([abs(s["specificity_drop"]) for s in shifts])), 4
        )
    return {"run_dir": str(run_dir), "rule": rule, "films": len(labels), "variants": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=None, help="append one line per run")
    parser.add_argument(
        "--rule", choices=RULES, nargs="+", default=["own"], help="threshold rules judged"
    )
    args = parser.parse_args()
    for run_dir in args.runs:
        for rule, report in holdups(run_dir, args.rule).items():
            show(report, rule, args.json)


def show(report: dict, rule: str, json_path: Path | None) -> None:
    """Print one rule's report, and append it to json_path."""
    print(
        f"{report['run_dir']}: val, {report['films']} films, {len(report['variants'])} "
        f"variants, thresholds: {rule}"
    )
    print(
        f"  {'variant':<12} {'worst Δrecall':>13} {'worst Δspec':>11} {'worst ΔAUC':>10} "
        f"{'mean |Δspec|':>12} {'shifts failed':>13}"
    )
    for name, entry in report["variants"].items():
        print(
            f"  {name:<12} {entry['worst_recall_drop']:>13.4f} "
            f"{entry['worst_specificity_drop']:>11.4f} {entry['worst_auc_drop']:>10.4f} "
            f"{entry['mean_abs_specificity_change']:>12.4f} {entry['shifts_failed']:>13}"
        )
    if json_path:
        with json_path.open("a") as out:
            out.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
