"""benchmark.json as people read it: the summary table (text or markdown) and
benchmark.md."""

from __future__ import annotations

import json

from edgexray.benchmarks.timing import (
    KERAS_THREADS,
    MIN_TICKS_PER_RUN,
    UNSTABLE_MAX_OVER_MIN,
    UNSTABLE_P99_OVER_P50,
)
from edgexray.formatting import format_table, number, target_state


def _number(value, digits: int = 3) -> str:
    return number(value, digits, missing="—")


def table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the one summary table, every cell already a string."""
    keys = list(result["thread_keys"])
    if any(KERAS_THREADS in r["latency"] for r in result["variants"]):
        keys.append(KERAS_THREADS)
    headers = (
        ["variant", "method", "size KB", "gzip KB", "params", "sparsity", "load ms"]
        + [f"p50/p95/p99 ms @{k}" for k in keys]
        + [
            "e2e p50 ms",
            "peak RSS MB",
            "recall",
            "Δrecall vs float",
            "specificity",
            "accuracy",
            "AUC",
            "ECE",
            "size ×",
            "gzip ×",
        ]
        + [f"p50 × @{k}" for k in result["thread_keys"]]
        + ["RSS ×", "timing"]
    )
    rows = []
    for row in result["variants"]:
        latency, report, ratio = row["latency"], row["metrics"], row["ratio_to_float32"]
        first = next(iter(latency.values()))
        cells = [
            row["name"],
            row["method"],
            _number(row["size_bytes"] / 1024, 1),
            _number(row["gzip_bytes"] / 1024, 1),
            f"{row['parameters']:,}",
            _number(row["sparsity"], 3),
            _number(first["load_ms"], 1),
        ]
        for key in keys:
            stats = latency.get(key, {}).get("inference_ms")
            cells.append(
                "/".join(_number(stats[p], 3) for p in ("p50", "p95", "p99")) if stats else "—"
            )
        cells += [
            _number(first["end_to_end_ms"]["p50"], 2),
            _number(row["peak_rss_mb"], 1),
            _number(report["recall"], 4),
            _number(row["recall_minus_float"], 4),
            _number(report["specificity"], 4),
            _number(report["accuracy"], 4),
            _number(report["auc"], 4),
            _number(report["ece"], 4),
            _number(ratio["size"], 3),
            _number(ratio["gzip_size"], 3),
        ]
        cells += [_number(ratio["p50_latency"][k], 3) for k in result["thread_keys"]]
        cells.append(_number(ratio["peak_rss"], 3))
        unstable = [
            f"@{key} {'e2e' if part == 'end_to_end_ms' else 'inference'}"
            for key, stats in latency.items()
            for part in ("inference_ms", "end_to_end_ms")
            if stats[part]["unstable"]
        ]
        cells.append("UNSTABLE " + ", ".join(unstable) if unstable else "ok")
        rows.append(cells)
    return headers, rows


def markdown_report(result: dict) -> str:
    """benchmark.md: the table, the targets, the data, the machine and the timer."""
    machine, timer, data_info = result["machine"], result["timer"], result["data"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    lines = [
        "# edgexray benchmark",
        "",
        f"Created {result['created']}; {data_info['images']} test images "
        f"({data_info['pneumonia']} pneumonia, {data_info['normal']} normal, "
        f"{data_info['skipped']} unreadable skipped) from {data_info['source']}. "
        f"Ratios (×) are to `{result['reference']}` in this same run.",
        "",
        format_table(*table(result), markdown=True),
        "",
    ]
    if result["targets"]:
        lines += ["## Targets", ""]
        for target in result["targets"]:
            state = target_state(target["met"])
            lines.append(f"- {target['target']}: {state} ({_number(target['ratio'], 3)})")
        lines.append("")
    lines += [
        "## Machine",
        "",
        f"- CPU: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable); "
        f"int8 features: {', '.join(machine.get('cpu_int8_features') or ['none listed'])}",
        f"- OS: {machine['os']}; Python {machine['python']}",
        f"- Libraries: {versions}",
        f"- Load average at start / end: {machine['load_average_at_start']} / "
        f"{machine['load_average_at_end']}",
        f"- Timer: {timer['clock']} ({timer['implementation']}), stated resolution "
        f"{timer['resolution_s']:g} s, smallest measured step {timer['measured_min_step_ns']} ns",
        f"- Config: {json.dumps(result['config'])}",
        "",
        "## Notes",
        "",
        *[f"- {note}" for note in result["notes"]],
        f"- A timing is UNSTABLE when p99/p50 > {UNSTABLE_P99_OVER_P50:g}, max/min > "
        f"{UNSTABLE_MAX_OVER_MIN:g} or p50 is under {MIN_TICKS_PER_RUN} timer steps.",
    ]
    if result["plots"]:
        lines += ["", "## Plots", "", *[f"![{p}]({p})" for p in result["plots"]]]
    return "\n".join(lines) + "\n"
