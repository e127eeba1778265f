"""Print benchmarks/results/ablation.jsonl as the Markdown table of benchmarks/README.md.

python benchmarks/ablation_table.py
"""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "ablation.jsonl"


def main() -> None:
    print(
        "| config | changes (see above) | val AUC | test/ AUC | test/ recall | "
        "test/ specificity | test/ specificity at recall ≥ 0.97 (hindsight) | test/ ECE | "
        "int8 test/ AUC | int8 KB | int8 p50 ms | training s (epochs) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for line in RESULTS.read_text().splitlines():
        row = json.loads(line)
        test, int8 = row["float_test"], row["int8_test"]
        changes = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "none"
        print(
            f"| {row['name']} | {changes} | {row['val_auc']:.4f} | {test['auc']:.4f} | "
            f"{test['recall']:.4f} | {test['specificity']:.4f} | "
            f"{row['float_test_spec_at_recall_hindsight']:.4f} | {test['ece']:.3f} | "
            f"{int8['auc']:.4f} | {row['int8_kb']:.1f} | {row['int8_p50_ms']:.2f} | "
            f"{row['train_seconds']:.0f} ({row['best_epoch']} of {row['epochs_run']}) |"
        )


if __name__ == "__main__":
    main()
