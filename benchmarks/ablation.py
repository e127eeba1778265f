"""Ablation of training choices, measured on the new-site test/ folder.

Each configuration is trained with `edgexray.pipeline.train.train` (threshold chosen on
val, for recall >= target), exported as a full-int8 .tflite, and both are scored on
the run's test split (with the Kaggle layout: exactly the test/ folder). One JSON line
per configuration is appended to benchmarks/results/ablation.jsonl.

    python benchmarks/ablation.py NAME '{"augmentation": "site"}' [--data DIR] [--runs DIR]

Decisions should be taken on the val columns; the test/ columns are what a user gets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

HEADLINE = ("auc", "recall", "specificity", "accuracy", "ece")
RESULTS = Path(__file__).resolve().parent / "results" / "ablation.jsonl"


def specificity_at_recall(labels, probabilities, target: float) -> float:
    """Best specificity with recall >= target, choosing the threshold in hindsight."""
    from edgexray.pipeline import metrics

    threshold = metrics.threshold_for_recall(labels, probabilities, target)
    return metrics.classification_report(labels, probabilities, threshold)["specificity"]


def p50_latency_ms(model_path: Path, image: np.ndarray, runs: int = 200) -> float:
    """Median invoke time at 1 thread on ready input tensors."""
    from edgexray.edge_runtime.interpreter import input_batch, load_interpreter

    interpreter = load_interpreter(model_path, threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], input_batch(image, detail))
    for _ in range(20):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("overrides", help="JSON object of TrainConfig fields")
    parser.add_argument("--data", default="../shared/data/chest_xray")
    parser.add_argument("--runs", default="runs/ablation")
    args = parser.parse_args()

    from edgexray.export.quantize import QuantizeConfig, quantize
    from edgexray.pipeline import data, metrics, scoring
    from edgexray.pipeline.evaluate import load_model
    from edgexray.pipeline.train import TrainConfig, train

    overrides = json.loads(args.overrides)
    config = TrainConfig(data=str(Path(args.data).resolve()), **overrides)
    run_dir = Path(args.runs) / args.name
    started = time.monotonic()
    summary = train(config, run_dir, verbose=2)
    train_seconds = time.monotonic() - started

    test_paths, test_labels = data.run_split(run_dir, "test")
    from edgexray import artifacts

    float_probabilities = scoring.keras_probabilities(
        artifacts.load_keras(run_dir / "model.keras"), test_paths, config.input_spec
    )
    quantize(run_dir, ["int8"], QuantizeConfig(), verbose=0)
    int8 = load_model(run_dir / "tflite" / "int8.tflite")
    int8_probabilities = scoring.probabilities_of(int8.scorer, test_paths)
    target = config.target_recall
    float_test = metrics.classification_report(
        test_labels, float_probabilities, summary["threshold"]
    )
    int8_test = metrics.classification_report(test_labels, int8_probabilities, int8.threshold)
    image = scoring.decode(test_paths[0], config.input_spec)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    row = {
        "name": args.name,
        "overrides": overrides,
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "train_seconds": round(train_seconds, 1),
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "parameters": summary["parameters"],
        "val_auc": summary["val"]["at_threshold"]["auc"],
        "val_specificity": summary["val"]["at_threshold"]["specificity"],
        "threshold": summary["threshold"],
        "float_test": {k: float_test[k] for k in HEADLINE},
        "float_test_spec_at_recall_hindsight": specificity_at_recall(
            test_labels, float_probabilities, target
        ),
        "int8_test": {k: int8_test[k] for k in HEADLINE},
        "int8_threshold": int8.threshold,
        "int8_kb": round((run_dir / "tflite" / "int8.tflite").stat().st_size / 1024, 1),
        "int8_p50_ms": round(p50_latency_ms(run_dir / "tflite" / "int8.tflite", image), 3),
        "shift_stress_test_val": summary["shift_stress_test_val"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
