"""Each film decoded and resized once: a disk cache of the model-size 8-bit image.

Training decodes every file on every epoch, and evaluation, calibration and quantization
decode the same files again; a full-resolution original (1000-2000 px JPEG) costs far
more to decode than the model then spends on it. What is cached is exactly what
`edge_runtime.preprocess.resized_grayscale` returns: the 8-bit grayscale image,
EXIF-upright, resized to the model's height x width. That is the point where the
pipeline branches today: training's augmentation and the shift stress test change that
image, and normalisation (`equalize` or `scale`) is applied after them, so neither
belongs in the cache (nor in its key) and a cached run computes bit for bit what an
uncached one does.

Key: the sha256 of the file's bytes (a renamed or copied film is found again, an edited
one never is), the height and width, PREPROCESS_VERSION and Pillow's version (a new
Pillow may decode or resize a pixel differently). Hashing reads the file, but costs well
under a millisecond for a 300 kB film against tens for decoding it, so no (path, size,
mtime) index is kept in front of it (measured: benchmarks/README.md, "Decode cache and
full-resolution films").

Where: $EDGEXRAY_CACHE, else $XDG_CACHE_HOME/edgexray/decoded, else
~/.cache/edgexray/decoded. EDGEXRAY_CACHE=off (or 0, or empty) turns it off. Entries are
written temp-file-then-rename; an entry that is truncated or altered fails its checksum
and is decoded and written again; a cache that cannot be written is skipped with one
warning, never an error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import struct
import tempfile
from pathlib import Path

import numpy as np
import PIL

from edgexray.edge_runtime import preprocess

log = logging.getLogger("edgexray")

# Bump when readers.read or preprocess.resize change what they return.
PREPROCESS_VERSION = 1
OFF = ("", "0", "off", "none", "false", "no")
MAGIC = b"EXRG"
HEADER = struct.Struct("<4sHH")  # magic, height, width
CHECK = 16  # bytes of blake2b over header and pixels, at the end of an entry

_warned: set[str] = set()


def cache_root() -> Path | None:
    """The folder of decoded films, or None when the cache is turned off."""
    value = os.environ.get("EDGEXRAY_CACHE")
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgexray" / "decoded"


def _file_digest(path) -> str | None:
    """sha256 of a regular file's bytes; None when it is not one (or cannot be read), so
    the decoder, not the cache, reports the problem."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        digest = hashlib.sha256()
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        return digest.hexdigest()


def entry_path(root: Path, digest: str, height: int, width: int) -> Path:
    folder = f"v{PREPROCESS_VERSION}-pillow{PIL.__version__}"
    return root / folder / f"{height}x{width}" / digest[:2] / f"{digest}.gray"


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=CHECK).digest()


def read_entry(path: Path, height: int, width: int) -> np.ndarray | None:
    """The cached image, or None when absent, truncated, altered or of another size."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    body, check = data[:-CHECK], data[-CHECK:]
    if len(body) != HEADER.size + height * width or _checksum(body) != check:
        return None
    if HEADER.unpack_from(body) != (MAGIC, height, width):
        return None
    pixels = np.frombuffer(body, dtype=np.uint8, offset=HEADER.size)
    return pixels.reshape(height, width).copy()  # writable, like a decoded image


def write_entry(path: Path, gray: np.ndarray) -> None:
    """Write atomically: readers see the old entry, or none, or the whole new one."""
    height, width = gray.shape
    body = HEADER.pack(MAGIC, height, width) + np.ascontiguousarray(gray, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(body + _checksum(body))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _warn_once(root: Path, err: OSError) -> None:
    if str(root) not in _warned:
        _warned.add(str(root))
        log.warning("decode cache %s not writable (%s): decoding without it", root, err)


def resized_grayscale(path, input_spec: dict) -> np.ndarray:
    """`preprocess.resized_grayscale(path, input_spec)`, from the cache when it is there.

    Raises:
        ImageError: the file cannot be read as an image (never cached).
    """
    height, width = int(input_spec["height"]), int(input_spec["width"])
    root = cache_root()
    digest = _file_digest(path) if root is not None else None
    if digest is None:
        return preprocess.resized_grayscale(path, input_spec)
    entry = entry_path(root, digest, height, width)
    cached = read_entry(entry, height, width)
    if cached is not None:
        return cached
    gray = preprocess.resized_grayscale(path, input_spec)
    if _file_digest(path) != digest:  # replaced while it was decoded: do not mislabel it
        return gray
    try:
        write_entry(entry, gray)
    except OSError as err:
        _warn_once(root, err)
    return gray
