"""report.md: one document gathering a run's config, split, metrics, gate and benchmark.

It is what a clinic's IT person reads, so it says in words what the numbers are from.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edgexray import __version__, artifacts
from edgexray.errors import check_threshold
from edgexray.formatting import interval, number


def _interval(bounds) -> str:
    return interval(bounds, "{:.3f}–{:.3f}", "n/a")


def _metrics_table(metrics: dict) -> list[str]:
    lines = [
        "| split | threshold | recall (95% CI) | specificity (95% CI) | AUC | accuracy | ECE | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in ("val", "test"):
        for at in ("at_threshold", "at_0.5"):
            m = metrics[split][at]
            recall = f"{number(m['recall'])} ({_interval(m['recall_ci95'])})"
            specificity = f"{number(m['specificity'])} ({_interval(m['specificity_ci95'])})"
            lines.append(
                f"| {split} | {m['threshold']:.4f} | {recall} | {specificity} | "
                f"{number(m['auc'])} | {number(m['accuracy'])} | {number(m['ece'], 3)} | {m['n']} |"
            )
    return lines


def _read(path: Path) -> dict | None:
    return artifacts.read_json(path) if path.is_file() else None


def write_report(run_dir: Path, config, summary: dict) -> Path:
    """Write run_dir/report.md from the files the stages left there."""
    from edgexray.pipeline.verify import table_lines

    run_dir = Path(run_dir)
    metrics = artifacts.read_json(run_dir / artifacts.METRICS)
    quantized = _read(run_dir / artifacts.QUANTIZE_REPORT)
    verify = _read(run_dir / artifacts.VERIFY_REPORT)
    selected = summary.get("selected")
    split = metrics["split"]

    gate = "PASSED" if summary["gate_passed"] else "FAILED"
    lines = [
        "# edgexray run report",
        "",
        f"edgexray {__version__}, data `{config.train.data}`. Every number below comes from "
        "this run directory. **val and test are patient-grouped splits of the given data** "
        "(no patient in two splits), not the official Kaggle test set.",
        "",
        "## Result",
        "",
        f"- Recall gate (no candidate may lose pneumonia recall against the float model by "
        f"more than {config.gate.max_recall_drop}, specificity by more than "
        f"{config.gate.max_specificity_drop} or AUC by more than {config.gate.max_auc_drop}): "
        f"**{gate}**",
    ]
    if selected:
        lines.append(
            f"- Model to deploy: `{selected['model']}` ({selected['why']}); bundles in "
            "`bundles/rpi` and `bundles/android` (and their .zip)."
        )
    lines += [
        "",
        "## Split",
        "",
        "| split | images | patients | NORMAL | PNEUMONIA |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {c['images']} | {c['patients']} | {c['NORMAL']} | {c['PNEUMONIA']} |"
            for name, c in split.items()
        ),
        "",
        "## Float model",
        "",
        f"{metrics['parameters']:,} parameters; best epoch {metrics['best_epoch']} of "
        f"{metrics['epochs_run']}; decision threshold "
        f"{check_threshold(metrics.get('threshold'), artifacts.METRICS):.4f}, chosen on val "
        f"for pneumonia recall ≥ {metrics['target_recall']}.",
        "",
        *_metrics_table(metrics),
        "",
        "### Shift stress test (val, at the chosen threshold)",
        "",
        "The same val images after plausible acquisition changes, applied before preprocessing.",
        "",
        "| change | AUC | recall | specificity |",
        "|---|---|---|---|",
        *(
            f"| {name} | {number(m['auc'])} | {number(m['recall'])} | {number(m['specificity'])} |"
            for name, m in metrics["shift_stress_test_val"].items()
        ),
    ]
    if quantized:
        lines += [
            "",
            "## Variants (thresholds re-chosen on val for each)",
            "",
            "| method | size KB | gzip KB | sparsity | threshold | val recall | val specificity |",
            "|---|---|---|---|---|---|---|",
        ]
        for method, v in quantized["variants"].items():
            threshold = check_threshold(v.get("threshold"), f"{artifacts.QUANTIZE_REPORT} {method}")
            lines.append(
                f"| {method} | {v['size_bytes'] / 1024:.1f} | {v['gzip_bytes'] / 1024:.1f} | "
                f"{v['sparsity']:.3f} | "
                f"{threshold:.4f} | {number(v['val']['recall'])} | "
                f"{number(v['val']['specificity'])} |"
            )
    if verify:
        lines += ["", "## Recall gate on the test split", "", "```", *table_lines(verify), "```"]
    benchmark_md = run_dir / artifacts.BENCHMARK_DIR / "benchmark.md"
    if benchmark_md.is_file():
        lines += ["", "## Benchmark", "", "From `benchmark/benchmark.md`:", ""]
        body = benchmark_md.read_text().splitlines()
        # Drop its own title; link plots relative to this report.
        body = [line for line in body if not line.startswith("# ")]
        lines += [line.replace("](", "](benchmark/") if "](" in line and ".png" in line else line
                  for line in body]  # fmt: skip
    lines += [
        "",
        "## Stages",
        "",
        "| stage | status | seconds |",
        "|---|---|---|",
        *(
            f"| {stage} | {s['status']} | {s['seconds']} |"
            for stage, s in summary["stages"].items()
        ),
        "",
        "## Config",
        "",
        "```json",
        json.dumps({k: v for k, v in dataclasses.asdict(config).items()}, indent=2, default=list),
        "```",
        "",
    ]
    path = run_dir / artifacts.RUN_REPORT
    artifacts.atomic_write(path, lambda temporary: temporary.write_text("\n".join(lines)))
    return path
