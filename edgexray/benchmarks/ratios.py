"""Each variant against the float32 .tflite of the same benchmark, and the project's
compression targets met, missed or not measured."""

from __future__ import annotations


def _ratio(value, reference):
    if value is None or reference is None or not reference:
        return None
    return float(value) / float(reference)


def add_ratios(rows: list[dict], thread_keys: list[str]) -> str | None:
    """Each variant's size, gzip size, p50 latency and memory over float32 TFLite's."""
    reference = next((r for r in rows if r["kind"] == "tflite" and r["method"] == "float32"), None)
    for row in rows:
        ref = reference or {}
        ref_latency = ref.get("latency", {})
        row["ratio_to_float32"] = {
            "size": _ratio(row["size_bytes"], ref.get("size_bytes")),
            "gzip_size": _ratio(row["gzip_bytes"], ref.get("gzip_bytes")),
            "p50_latency": {
                key: _ratio(
                    row["latency"][key]["inference_ms"]["p50"] if key in row["latency"] else None,
                    ref_latency[key]["inference_ms"]["p50"] if key in ref_latency else None,
                )
                for key in thread_keys
            },
            "peak_rss": _ratio(row["peak_rss_mb"], ref.get("peak_rss_mb")),
        }
    return reference["name"] if reference else None


def targets(rows: list[dict], thread_keys: list[str]) -> list[dict]:
    """The issue's compression targets, each marked met, missed or not measured (None)."""
    by_method = {r["method"]: r for r in rows if r["kind"] == "tflite"}
    int8, pruned = by_method.get("int8"), by_method.get("pruned-int8")
    checks = [
        (
            f"int8 p50 latency <= 0.5x float32 TFLite ({key} thread{'s' * (key != '1')})",
            int8 and int8["ratio_to_float32"]["p50_latency"][key],
            0.5,
        )
        for key in thread_keys
    ] + [
        (
            "int8 size <= 1/3.5 of float32 TFLite",
            int8 and int8["ratio_to_float32"]["size"],
            1 / 3.5,
        ),
        (
            "pruned-int8 gzip size <= 1/8 of float32 TFLite gzip",
            pruned and pruned["ratio_to_float32"]["gzip_size"],
            1 / 8,
        ),
    ]
    return [
        {
            "target": name,
            "ratio": value,
            "limit": limit,
            "met": None if value is None else bool(value <= limit),
        }
        for name, value, limit in checks
    ]
