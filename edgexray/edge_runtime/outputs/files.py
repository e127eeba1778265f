"""Writing an output file whole: a reader never sees half of it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import OutputError

# Files that name a patient (records with identity, reports, films) are readable by their
# owner alone, whatever the umask of the shell that wrote them.
PRIVATE = 0o600


def write_atomic(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write data to a temporary file beside path, then rename it into place (heatmaps,
    reports); with mode, the file gets exactly that mode.

    Raises:
        OutputError: it could not be written (a full disk, a read-only folder).
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        descriptor = os.open(temporary, flags, 0o666 if mode is None else mode)
        with open(descriptor, "wb") as handle:
            handle.write(data)
        if mode is not None:
            os.chmod(temporary, mode)  # the umask may have taken bits from it
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
