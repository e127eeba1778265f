"""report.md: one document gathering a run's config, split, metrics, gate and benchmark.

It is what a clinic's IT person reads, so it says in words what the numbers are from.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edgexray import __version__, artifacts
from edgexray.errors import check_threshold
from edgexray.formatting import estimate, format_table, number


def _metrics_table(metrics: dict) -> list[str]:
    # test first: it is what a user gets; val chose the epoch and the threshold.
    lines = [
        "| split | threshold | recall (95% CI) | specificity (95% CI) | AUC | accuracy | ECE | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in ("test", "val"):
        for at in ("at_threshold", "at_0.5"):
            m = metrics[split][at]
            recall = estimate(m["recall"], m["recall_ci95"], prose=True)
            specificity = estimate(m["specificity"], m["specificity_ci95"], prose=True)
            lines.append(
                f"| {split} | {m['threshold']:.4f} | {recall} | {specificity} | "
                f"{number(m['auc'])} | {number(m['accuracy'])} | {number(m['ece'], 3)} | {m['n']} |"
            )
    return lines


def _shift_report_lines(report: dict | None) -> list[str]:
    if not report:
        return []
    keys = ("auc", "recall", "specificity")

    def deltas(delta: dict) -> str:
        return " | ".join("n/a" if k not in delta else f"{delta[k]:+.4f}" for k in keys)

    return [
        "",
        "### Real shift against the synthetic ones",
        "",
        "Change of each metric from val: the real shift is val → test at the val threshold. "
        "A synthetic shift *moves alike* when every metric the real shift moves by ≥ 0.01 "
        "moves the same way under it, by ≥ 0.005.",
        "",
        "| shift | ΔAUC | Δrecall | Δspecificity | moves alike |",
        "|---|---|---|---|---|",
        f"| **real: val → test** | {deltas(report['real_val_to_test'])} | |",
        *(
            f"| {name} | {deltas(r['delta'])} | {'yes' if r['moves_like_real'] else 'no'} |"
            for name, r in report["synthetic"].items()
        ),
    ]


def _read(path: Path) -> dict | None:
    return artifacts.read_json(path) if path.is_file() else None


def _calibration_lines(report: dict) -> list[str]:
    """The section on `edgexray run --calibrate-on` (calibration.json)."""
    c, test = report["calibration"], report["test"]
    sample, confidence = c["sample"], f"{100 * c['confidence']:g}%"
    guarantee = (
        f"recall ≥ {c['target_recall']} with {confidence} confidence"
        if c["guarantee"]
        else f"**point estimate, no guarantee** (recall ≥ {c['target_recall']} on the sample)"
    )
    lines = [
        "## Calibration at the site",
        "",
        f"`{_in_run(report['calibrated_model'])}` is `{_in_run(report['model'])}` with its "
        "threshold re-chosen "
        f"on `{sample['folder']}` ({sample['pneumonia']} pneumonia, {sample['normal']} normal "
        f"films): {c['source_threshold']:.4f} → {c['threshold']:.4f}, for {guarantee}. The "
        "bundles ship the calibrated model.",
        "",
        "| films | threshold | recall (CI) | specificity (CI) |",
        "|---|---|---|---|",
    ]

    def row(name: str, threshold, rates: dict) -> str:
        shown = f"{threshold:.4f}" if isinstance(threshold, float) else threshold
        return (
            f"| {name} | {shown} | {estimate(rates['recall'], rates['recall_ci'], prose=True)} "
            f"| {estimate(rates['specificity'], rates['specificity_ci'], prose=True)} |"
        )

    lines.append(row("site sample, uncalibrated", c["source_threshold"], c["uncalibrated"]))
    lines.append(row("site sample, calibrated (in-sample)", c["threshold"], c["in_sample"]))
    cv = c["cross_validation"]
    if cv["available"]:
        lines.append(row("site sample, calibrated (patient-grouped CV)", "per fold", cv))
    left_out = test["left_out_as_calibration_films"]
    note = f"; {left_out} test films left out: they were calibration films" if left_out else ""
    if "after" in test:
        films = test["films"] - left_out
        for when in ("before", "after"):
            name = f"test split, {when} ({films} films{note})"
            lines.append(row(name, test[when]["threshold"], test[when]))
    else:
        lines += ["", f"No before/after on the test split: {test['reason']}{note}."]
    if not cv["available"]:
        lines += ["", f"No cross-validation on the site sample: {cv['reason']}."]
    return lines


def _in_run(path: str) -> str:
    """A run file as the run directory names it, e.g. calibrated/int8.tflite."""
    return Path(path).parent.name + "/" + Path(path).name


def write_report(run_dir: Path, config, summary: dict) -> Path:
    """Write run_dir/report.md from the files the stages left there."""
    from edgexray.export.quantize import variant_table
    from edgexray.pipeline.train import read_metrics
    from edgexray.pipeline.verify import table_lines

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    quantized = _read(run_dir / artifacts.QUANTIZE_REPORT)
    verify = _read(run_dir / artifacts.VERIFY_REPORT)
    selected = summary.get("selected")
    split = metrics["split"]

    excluded = summary.get("excluded") or []
    failed_names = ", ".join(f"`{variant['name']}`" for variant in excluded)
    if summary["gate_passed"]:
        gate = "**PASSED** by every variant"
    elif selected:
        gate = f"**FAILED** by {failed_names}, left out of the bundles; the deployed model passed"
    else:
        gate = (
            f"**FAILED** by {failed_names or 'a variant'}: no full-int8 variant passed, "
            "nothing deployed"
        )
    test_source = metrics.get("test_source", "a patient-grouped split of the given data")
    lines = [
        "# edgexray run report",
        "",
        f"edgexray {__version__}, data `{config.train.data}`. Every number below comes from "
        f"this run directory. **test is {test_source}**; val is a patient-grouped split of "
        "the training films (no patient in two splits) that chose the epoch and the "
        "threshold, so its numbers are optimistic.",
        "",
        "## Result",
        "",
        f"- Recall gate (no candidate may lose pneumonia recall against the float model by "
        f"more than {config.gate.max_recall_drop}, specificity by more than "
        f"{config.gate.max_specificity_drop} or AUC by more than {config.gate.max_auc_drop}, "
        f"nor refuse more than {config.gate.max_out_of_scope:.0%} of the test films as out of "
        f"scope): {gate}",
        *(
            f"- Excluded, failed the gate: `{variant['name']}`: " + "; ".join(variant["failures"])
            for variant in excluded
        ),
    ]
    if selected:
        lines.append(
            f"- Model to deploy: `{selected['model']}` ({selected['why']}); bundles in "
            "`bundles/rpi` and `bundles/android` (and their .zip)."
        )
        if selected.get("calibrated_model"):
            lines.append(
                f"- Calibrated at the site: the bundles ship `{selected['calibrated_model']}` "
                "(see *Calibration at the site*)."
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
        f"The {config.train.backbone} network at {config.train.image_size} px, "
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
        *_shift_report_lines(metrics.get("shift_report")),
    ]
    if quantized:
        lines += ["", "## Variants (thresholds re-chosen on val for each)", ""]
        table = variant_table(quantized["variants"].values())
        lines += format_table(*table, markdown=True).splitlines()
    if verify:
        lines += ["", "## Recall gate on the test split", "", "```", *table_lines(verify), "```"]
    benchmark_md = run_dir / artifacts.BENCHMARK_DIR / "benchmark.md"
    if benchmark_md.is_file():
        lines += ["", "## Benchmark", "", "From `benchmark/benchmark.md`:", ""]
        body = benchmark_md.read_text().splitlines()
        # Drop its own title; link plots relative to this report.
        body = [line for line in body if not line.startswith("# ")]
        lines += [
            line.replace("](", "](benchmark/") if "](" in line and ".png" in line else line
            for line in body
        ]
    calibration = _read(run_dir / artifacts.CALIBRATION_REPORT)
    if calibration:
        lines += ["", *_calibration_lines(calibration)]
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
