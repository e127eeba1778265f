"""Heatmap files: each readable film's overlay (PNG) and occlusion map (.npy) in a folder,
their paths in its record ("overlay", "heatmap")."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import OutputError
from ..explain import Explanation, overlay, png_bytes
from .files import PRIVATE, write_atomic

OVERLAY_SUFFIX = ".heatmap.png"
MAP_SUFFIX = ".heatmap.npy"
# Output names start with the film's name, cut to this many bytes: with a suffix and a
# "-N" they stay under the 255 bytes most file systems allow in a name.
STEM_BYTES = 200


def free_stem(folder: Path, stem: str) -> str:
    """stem, or stem-2, stem-3...: the first for which neither the overlay nor the map
    exists in folder, so an earlier run's files (or a user's) are never overwritten.

    stem is cut to STEM_BYTES of UTF-8 first: a film's name may be as long as the file
    system allows, and its outputs add a suffix to it.
    """
    stem = stem.encode("utf-8")[:STEM_BYTES].decode("utf-8", "ignore")
    candidate, number = stem, 1
    while any((folder / f"{candidate}{end}").exists() for end in (OVERLAY_SUFFIX, MAP_SUFFIX)):
        number += 1
        candidate = f"{stem}-{number}"
    return candidate


def save(folder: str | Path, name: str, picture: Image.Image, explanation: Explanation):
    """Write the overlay PNG and the map .npy of the film called name (its record's path:
    a display name, valid UTF-8) into folder.

    Returns:
        (overlay path, map path).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create {folder}: {err.strerror or err}") from None
    stem = free_stem(folder, Path(name).name)
    buffer = io.BytesIO()
    np.save(buffer, explanation.saliency)
    overlay_path, map_path = folder / f"{stem}{OVERLAY_SUFFIX}", folder / f"{stem}{MAP_SUFFIX}"
    # The overlay is the patient's film: readable by its owner alone, as the records are.
    write_atomic(map_path, buffer.getvalue(), PRIVATE)
    write_atomic(overlay_path, png_bytes(picture), PRIVATE)
    return overlay_path, map_path


class Heatmaps:
    """The heatmap sink: writes each explained film's files into folder and names them in
    its record, for the sinks after it."""

    needs_map = True

    def __init__(self, folder: str | Path, threshold: float):
        self.folder = Path(folder)
        self.threshold = threshold

    def add(self, film, explanation: Explanation | None) -> None:
        if explanation is None:
            return
        picture = overlay(film.film, explanation, self.threshold)
        overlay_path, map_path = save(self.folder, film.record["path"], picture, explanation)
        film.record.update(overlay=str(overlay_path), heatmap=str(map_path))

    def close(self) -> None:
        pass
