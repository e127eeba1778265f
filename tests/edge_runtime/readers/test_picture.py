"""JPEG and PNG films (readers/picture.py): only those decoded, upright, within a memory bound."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_xray
from PIL import Image

from edgexray.edge_runtime import REFERENCE_MODEL, readers
from edgexray.edge_runtime.errors import ImageError
from edgexray.edge_runtime.readers import picture


def test_only_jpeg_and_png_are_decoded(tmp_path):
    image = synthetic_xray(np.random.default_rng(1), pneumonia=False)
    image.save(tmp_path / "bitmap.png", format="BMP")
    image.save(tmp_path / "tiff.jpg", format="TIFF")
    # PostScript would be handed to Ghostscript if Pillow were allowed to identify it.
    (tmp_path / "postscript.jpg").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n"
    )
    for name in ("bitmap.png", "tiff.jpg", "postscript.jpg"):
        with pytest.raises(ImageError, match="not a JPEG, PNG or DICOM image"):
            readers.read(tmp_path / name)[0]


def corrupt_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF block names tag data far past its end."""
    entries = [(0x010F, 2, 100, 0x1000), (0x0112, 3, 1, 6 << 16)]
    ifd = struct.pack(">H", len(entries)) + b"".join(struct.pack(">HHII", *e) for e in entries)
    film = np.asarray(synthetic_xray(np.random.default_rng(3), pneumonia=True, size=(96, 80)))
    Image.fromarray(film).save(path, exif=b"Exif\0\0MM\0\x2a\0\0\0\x08" + ifd + b"\0\0\0\0")
    return path


def test_a_jpeg_with_a_corrupt_exif_block_leaks_no_warning(tmp_path):
    film = corrupt_exif_jpeg(tmp_path / "bad exif.jpeg")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgexray.edge_runtime.infer",
            "--model",
            str(REFERENCE_MODEL),
            "--no-scope-check",  # a drawn test image, refused as out of scope otherwise
            str(film),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr and "warn(" not in result.stderr
    assert "probability" in json.loads(result.stdout)


def test_memory_is_bounded_by_decoded_bytes_not_pixels(tmp_path, monkeypatch):
    monkeypatch.setattr(picture, "MAX_DECODED_BYTES", 3_000_000)
    grey = np.full((1000, 1000), 128, np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")  # 1 MB decoded
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")  # the same pixels, 4 MB
    assert readers.read(tmp_path / "grey.png")[0].shape == (1000, 1000)
    with pytest.raises(ImageError, match="1000x1000 RGBA decodes to 3 MiB, over the 2 MiB"):
        readers.read(tmp_path / "rgba.png")[0]


def test_pillow_without_in_place_exif_transpose_reads_the_same_upright_film(tmp_path, monkeypatch):
    from PIL import Image

    from edgexray.edge_runtime import readers
    from edgexray.edge_runtime.readers import picture

    film = Image.fromarray(np.arange(40 * 60, dtype=np.uint32).reshape(40, 60).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to stand upright
    path = tmp_path / "rotated film.png"
    film.save(path, exif=exif)
    upright = readers.read(path)[0]
    monkeypatch.setattr(picture, "EXIF_IN_PLACE", False)  # Debian Bookworm's Pillow 9.4
    assert upright.shape == (60, 40)
    np.testing.assert_array_equal(readers.read(path)[0], upright)
