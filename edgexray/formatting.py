"""How numbers, intervals and target states are written for people, in one place.

A metric can be undefined (recall without pneumonia images is None in JSON, NaN in
numpy; a ratio to a missing reference is None): every table writes such a value as a
marker instead of failing or printing "nan".
"""

from __future__ import annotations

import math

TARGET_STATES = {True: "met", False: "MISSED", None: "not measured"}


def defined(value) -> bool:
    """False for a metric that is undefined here: None, NaN or infinite."""
    return value is not None and math.isfinite(value)


def number(value, digits: int = 4, missing: str = "n/a") -> str:
    """value with `digits` decimals, or `missing`."""
    return f"{value:.{digits}f}" if defined(value) else missing


def signed(value, digits: int = 4, missing: str = "n/a") -> str:
    """A difference with its sign; rounded first, so -0.00001 reads +0.0000, not -0.0000."""
    return f"{round(value, digits) or 0.0:+.{digits}f}" if defined(value) else missing


# How a 95% confidence interval is written: in terminal tables, and in markdown prose.
TEXT_INTERVAL = "[{:.3f}-{:.3f}]"
PROSE_INTERVAL = "({:.3f}–{:.3f})"


def interval(bounds, template: str = TEXT_INTERVAL, missing: str = "") -> str:
    """A confidence interval (low, high), or `missing` when a bound is undefined."""
    if not bounds or not all(defined(bound) for bound in bounds):
        return missing
    return template.format(*bounds)


def estimate(value, bounds, prose: bool = False) -> str:
    """A rate and its 95% interval: "0.9750 [0.912-0.993]", in prose "0.9750 (0.912–0.993)";
    n/a for what is undefined."""
    if prose:
        return f"{number(value)} {interval(bounds, PROSE_INTERVAL, '(n/a)')}"
    return f"{number(value)} {interval(bounds)}".rstrip()


def format_table(headers: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    """Plain aligned text, or a GitHub markdown table."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    )


def target_state(met: bool | None) -> str:
    """met, MISSED or not measured."""
    return TARGET_STATES[met]


def json_safe(value):
    """NaN (e.g. recall without pneumonia images) → None, so the output is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
