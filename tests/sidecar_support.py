"""Put a sidecar (even a wrong one, on purpose) inside a model file, as a tampered or badly
written model would carry it, and optionally the same as the readable copy beside it."""

from __future__ import annotations

import json
from pathlib import Path

from edgexray.edge_runtime import metadata


def put_sidecar(model: Path, sidecar: dict | str | bytes, copy: bool = True) -> Path:
    """Write `sidecar` (a dict, or JSON text as it is) as model's edgexray.json, every other
    byte kept, and with copy the same text as model.json (without: no model.json)."""
    text = sidecar if isinstance(sidecar, (str, bytes)) else json.dumps(sidecar)
    text = text.encode() if isinstance(text, str) else text
    data = Path(model).read_bytes()
    parts = metadata.parse(data)
    files = {**parts.files, metadata.SIDECAR_FILE: text}
    Path(model).write_bytes(metadata.pack(data[: parts.flatbuffer_size], files))
    beside = Path(model).with_suffix(".json")
    if copy:
        beside.write_bytes(text)
    else:
        beside.unlink(missing_ok=True)
    return Path(model)


def sidecar_inside(model: Path) -> dict:
    return json.loads(metadata.read(model).sidecar_bytes)


def with_graph_changed(data: bytes) -> bytes:
    """A model file's bytes with one byte of its flatbuffer (the graph) changed, its
    metadata kept: a model replaced behind its sidecar's back."""
    changed = bytearray(data)
    changed[metadata.parse(data).flatbuffer_size // 2] ^= 0x01
    return bytes(changed)


def bare_flatbuffer(model: Path) -> bytes:
    """A model file's flatbuffer alone, as an old model without metadata inside would be."""
    return Path(model).read_bytes()[: metadata.read(model).flatbuffer_size]
