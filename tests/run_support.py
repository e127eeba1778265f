"""Helpers for tests that damage, stop or resume a run folder and look at what changed."""

from __future__ import annotations

import hashlib
from pathlib import Path


def fingerprint(folder: Path) -> dict[str, str]:
    """sha256 of every file below folder, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
