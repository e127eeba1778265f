"""PNG plots of a benchmark result; needs matplotlib (pip install edgexray[plots]).

Importing this module raises ImportError without matplotlib, which the harness turns
into one log line and no plots.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window or need a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from edgexray import artifacts  # noqa: E402
from edgexray.pipeline import metrics  # noqa: E402


def _save(figure, path: Path) -> str:
    figure.tight_layout()
    artifacts.atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=120))
    plt.close(figure)
    return path.name


def _fraction(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _colors(count: int):
    return plt.get_cmap("tab10")(np.arange(count) % 10)


def size_vs_recall(result: dict, path: Path) -> str:
    """Raw size (filled) and gzip size (hollow) against pneumonia recall with its 95% CI."""
    variants = result["variants"]
    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    for index, (row, color) in enumerate(zip(variants, _colors(len(variants)), strict=True)):
        recall = row["metrics"]["recall"]
        if recall is None:  # no pneumonia film in the test images
            continue
        low, high = row["metrics"]["recall_ci95"]
        size_kb, gzip_kb = row["size_bytes"] / 1024, row["gzip_bytes"] / 1024
        axes.errorbar(
            size_kb,
            recall,
            yerr=[[max(0.0, recall - low)], [max(0.0, high - recall)]],  # rounding can cross
            fmt="o",
            color=color,
            capsize=3,
            label=row["name"],
        )
        axes.plot([gzip_kb], [recall], marker="o", markerfacecolor="none", color=color)
        axes.plot([gzip_kb, size_kb], [recall, recall], color=color, linewidth=0.8, alpha=0.5)
        axes.annotate(
            row["name"],
            (size_kb, recall),
            textcoords="offset points",
            # Variants often share a recall and nearly a size: stagger the labels.
            xytext=(6, 6 + 11 * (index % 3)),
            fontsize=8,
            color=color,
        )
    keras = next((r for r in variants if r["kind"] == "keras"), None)
    if keras:
        axes.axhline(
            keras["metrics"]["recall"],
            color="grey",
            linestyle="--",
            linewidth=0.8,
            label="float Keras recall",
        )
    axes.set_xscale("log")
    axes.set_xlabel("file size, KB (log; filled = raw, hollow = gzip -9)")
    axes.set_ylabel("pneumonia recall (test split, 95% CI)")
    axes.set_title("Size vs pneumonia recall at each variant's threshold")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    return _save(figure, path)


def latency(result: dict, path: Path) -> str:
    """Median inference latency per variant and thread count; whiskers reach p95."""
    variants = result["variants"]
    keys = list(result["thread_keys"])
    keys += sorted({k for r in variants for k in r["latency"]} - set(keys))
    width = 0.8 / len(keys)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.3 * len(variants) + 2), 4.5))
    positions = np.arange(len(variants))
    for offset, (key, color) in enumerate(zip(keys, _colors(len(keys)), strict=True)):
        for index, row in enumerate(variants):
            stats = row["latency"].get(key, {}).get("inference_ms")
            if not stats:
                continue
            x = positions[index] + (offset - (len(keys) - 1) / 2) * width
            label = f"{key} thread{'s' * (key != '1')}" if key.isdigit() else "Keras, TF pool"
            axes.bar(
                x,
                stats["p50"],
                width,
                color=color,
                label=label if label not in axes.get_legend_handles_labels()[1] else None,
                yerr=[[0], [stats["p95"] - stats["p50"]]],
                capsize=3,
            )
            axes.annotate(
                f"{stats['p50']:.2f}" + (" !" if stats["unstable"] else ""),
                (x, stats["p95"]),
                textcoords="offset points",
                xytext=(0, 4),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
            )
    axes.set_xticks(positions, [r["name"] for r in variants], rotation=20, ha="right")
    axes.set_yscale("log")
    low, high = axes.get_ylim()
    axes.set_ylim(low, high * 2.5)  # room for the value labels above the tallest bar
    axes.set_ylabel("inference ms per image (log; bar p50, whisker p95)")
    axes.set_title("Latency per variant and thread count (! = unstable timing)")
    axes.grid(True, axis="y", which="both", alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, path)


def confusion_matrices(result: dict, path: Path) -> str:
    """One 2x2 matrix per variant at its own threshold; rows true, columns predicted."""
    variants = result["variants"]
    columns = min(4, len(variants))
    rows_count = int(np.ceil(len(variants) / columns))
    figure, grid = plt.subplots(
        rows_count, columns, figsize=(3.0 * columns, 3.0 * rows_count), squeeze=False
    )
    for axes, row in zip(grid.flat, variants, strict=False):
        matrix = np.asarray(row["metrics"]["confusion_matrix"])
        axes.imshow(matrix, cmap="Blues", vmin=0, vmax=max(int(matrix.max()), 1))
        for (i, j), count in np.ndenumerate(matrix):
            dark = count > matrix.max() / 2
            axes.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                color="white" if dark else "black",
                fontsize=11,
            )
        axes.set_xticks([0, 1], ["NORMAL", "PNEUMONIA"], fontsize=8)
        axes.set_yticks([0, 1], ["NORMAL", "PNEUMONIA"], fontsize=8)
        axes.set_xlabel("predicted", fontsize=8)
        axes.set_ylabel("true", fontsize=8)
        report = row["metrics"]
        axes.set_title(
            f"{row['name']} (threshold {row['threshold']:.3f})\n"
            f"recall {_fraction(report['recall'])}, specificity {_fraction(report['specificity'])}",
            fontsize=9,
        )
    for axes in list(grid.flat)[len(variants) :]:
        axes.axis("off")
    return _save(figure, path)


def roc_curves(result: dict, labels, probabilities: dict, path: Path) -> str:
    """ROC of every variant with its operating point; the right panel zooms on high recall."""
    variants = result["variants"]
    figure, (full, zoom) = plt.subplots(1, 2, figsize=(11, 4.8))
    for row, color in zip(variants, _colors(len(variants)), strict=True):
        fpr, tpr = metrics.roc_curve(labels, probabilities[row["name"]])
        report = row["metrics"]
        for axes in (full, zoom):
            axes.plot(
                fpr,
                tpr,
                color=color,
                linewidth=1.2,
                label=f"{row['name']} (AUC {_fraction(report['auc'])})",
            )
            if report["specificity"] is not None and report["recall"] is not None:
                axes.plot([1 - report["specificity"]], [report["recall"]], "o", color=color)
    full.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    # The corner a screening tool lives in: recall near 1, few normal films flagged.
    recalls = [r["metrics"]["recall"] for r in variants if r["metrics"]["recall"] is not None]
    zoom.set_xlim(0, 0.3)
    zoom.set_ylim(max(0.0, min([0.8, *recalls]) - 0.05), 1.005)
    for axes, title in ((full, "ROC on the test split"), (zoom, "high-recall corner")):
        axes.set_xlabel("1 - specificity (normal films flagged)")
        axes.set_ylabel("pneumonia recall")
        axes.set_title(title + " (dot = variant's threshold)")
        axes.grid(True, alpha=0.3)
    full.legend(fontsize=8, loc="lower right")
    return _save(figure, path)


def draw_all(result: dict, labels, probabilities: dict, out: Path) -> list[str]:
    """Every plot into out; returns the file names written."""
    out = Path(out)
    return [
        size_vs_recall(result, out / "size_vs_recall.png"),
        latency(result, out / "latency.png"),
        confusion_matrices(result, out / "confusion_matrices.png"),
        roc_curves(result, labels, probabilities, out / "roc_curves.png"),
    ]
