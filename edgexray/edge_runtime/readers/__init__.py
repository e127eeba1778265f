"""Film files: which files are films, and the one reader of each kind.

`READERS` is the table: a kind of film, the suffixes it goes by, how its content is
recognised whatever its name, and the function that reads it into 8-bit grey levels. A
new input format is one row here and its module beside this file. Every lister and reader
of edgexray (training data, evaluation, `predict`, the node, the bundle's watch folder
through `infer.py --list-images`) goes through `is_film_file` and `read`, so they all
agree on what a film is and how it is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageError
from . import dicom, picture
from .files import MAX_PIXELS


@dataclass(frozen=True)
class Reader:
    """One kind of film file."""

    kind: str
    suffixes: tuple[str, ...]  # lower case
    # True when the file's content is this kind, whatever its name (X-ray units and PACS
    # exports often write DICOM without a suffix, or with a UID as the name); None: by
    # suffix alone.
    recognises: Callable[[Path], bool] | None
    # (8-bit grey film, info): info["rendering"] says how the grey levels were made.
    read: Callable[[Path, int], tuple[np.ndarray, dict]]


DICOM = Reader("DICOM", (dicom.DICOM_SUFFIX,), dicom.has_preamble, dicom.read_film)
PICTURE = Reader("JPEG or PNG", (".jpeg", ".jpg", ".png"), None, picture.read)
# Content first, then suffix (reader_for); the last row takes what no row recognises.
READERS = (DICOM, PICTURE)
SUFFIXES = tuple(suffix for reader in READERS for suffix in reader.suffixes)
# Files that look like films but are indexes of them (a DICOMDIR holds the preamble).
NOT_FILMS = ("DICOMDIR",)


def reader_for(path: str | Path) -> Reader:
    """The reader of a file: by its content first, then by its suffix; a file neither
    recognises goes to the last reader, whose error says what is read."""
    path = Path(path)
    for reader in READERS:
        if reader.recognises is not None and reader.recognises(path):
            return reader
    name = path.name.lower()
    return next((r for r in READERS if name.endswith(r.suffixes)), READERS[-1])


def read(source, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, dict]:
    """A film as an 8-bit grey array, and how it was rendered.

    source is a file's path, or a film a program already holds: a numpy array
    (picture.ARRAY_KINDS), a PIL image or a pydicom Dataset, each read as its file would be.

    DICOM goes through `dicom.read_film`'s one rendering rule; JPEG and PNG are made
    upright as the EXIF tag says, a 16-bit PNG windowed on robust percentiles.

    Returns:
        (gray, info): info has "rendering", a short description of how the grey levels
        were made, for DICOM "tags" (Modality, BodyPartExamined, ViewPosition...), and
        for a colour JPEG or PNG "colour", its `scope.colour_spread` (the scope guard's
        photograph check).

    Raises:
        ImageError: the file is missing, not a regular file, not a JPEG, PNG or DICOM film,
            truncated or too large; or DICOM support is not installed.
    """
    if isinstance(source, (str, os.PathLike)):
        return reader_for(source).read(source, max_pixels)
    return _from_memory(source, max_pixels)


def _from_memory(source, max_pixels: int) -> tuple[np.ndarray, dict]:
    """A film held in memory, by its kind (nothing imported for kinds not given)."""
    if isinstance(source, np.ndarray):
        return picture.from_array(source, max_pixels)
    if type(source).__module__.split(".")[0] == "pydicom":  # a Dataset, or a FileDataset
        return dicom.read_film(source, max_pixels)
    from PIL import Image

    if isinstance(source, Image.Image):
        # A copy: it is turned upright, and the caller's image stays as it was.
        return picture.from_image(source.copy(), max_pixels, kind=source.format)
    raise ImageError(
        f"{type(source).__name__}: not a film (give a path, a numpy array, a PIL image or a "
        "pydicom Dataset)"
    )


def is_film_file(path: str | Path) -> bool:
    """The one rule for what is a film: a regular file (not a FIFO, device or folder) with
    a film suffix in any case, or any other name a reader recognises by content; not
    hidden (macOS "._x.jpeg" resource forks and rsync's half-copied temporaries start with
    a dot), and not an index of films (NOT_FILMS)."""
    path = Path(path)
    name = path.name
    if name.startswith(".") or not path.is_file():
        return False
    if name.lower().endswith(SUFFIXES):
        return True
    recognised = any(r.recognises is not None and r.recognises(path) for r in READERS)
    return recognised and name.upper() not in NOT_FILMS


def film_files(folder: str | Path) -> list[Path]:
    """Every film file under folder by `is_film_file`, sorted; hidden folders are skipped."""
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        found += [Path(root, name) for name in files if is_film_file(Path(root, name))]
    return sorted(found)


def find(inputs) -> list[Path]:
    """The films to classify: files as given, folders walked by `film_files`.

    A given path that is not a film file (missing, a FIFO, a folder-less typo) stays in
    the list, so it gets an error record instead of vanishing.
    """
    found = []
    for item in map(Path, inputs):
        found += film_files(item) if item.is_dir() else [item]
    return found
