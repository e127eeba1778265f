"""Opening a film's file: regular files only, never blocking, and the size every reader
refuses beyond."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import ImageError

# Larger images are refused as decompression bombs. Real chest films are at most about
# 4500 x 4500 pixels; 50 megapixels leaves room and still bounds memory.
MAX_PIXELS = 50_000_000


def open_regular(path: str | Path):
    """Open a regular file for reading; anything else is refused without blocking.

    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer
    forever; fstat then refuses it (and devices and folders) by what it is, not its name.

    Raises:
        ImageError: it cannot be opened, or is not a regular file.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ImageError(f"{path}: cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ImageError(f"{path}: not a regular file")
    return os.fdopen(descriptor, "rb")


def head(path: str | Path, size: int) -> bytes:
    """The first size bytes of a regular file; b"" for anything else (a FIFO or a device is
    never read, a missing file is no error here)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return b""
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return b""
        return os.pread(descriptor, size, 0)
    except OSError:
        return b""
    finally:
        os.close(descriptor)


def bomb_message(where, width: int, height: int, max_pixels: int) -> str:
    """The refusal of an image over the pixel limit, the same for every reader."""
    return (
        f"{where}: {width}x{height} pixels is over the {max_pixels} limit "
        "(refused as a possible decompression bomb)"
    )
