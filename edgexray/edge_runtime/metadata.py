"""What a .tflite file carries beside its graph, and the sha256 that identifies the model.

A model file edgexray writes is laid out as LiteRT's metadata tools lay one out
(tflite-support's MetadataPopulator): first the model flatbuffer, holding the graph and
the standard TFLite `ModelMetadata` (name, version, licence, the input image and its
normalisation, the outputs) in its "TFLITE_METADATA" buffer; then the associated files,
as a zip appended to the flatbuffer, each stored uncompressed (LiteRT's C++ and Java
readers take no other):

    labels.txt     the label of each value of output 0 (TENSOR_AXIS_LABELS)
    edgexray.json  the sidecar: preprocessing, threshold and its origin, output kind,
                   scope statistics, calibration (`sidecar.Sidecar`)

A model's identity is the sha256 of its flatbuffer, the bytes before the associated
files: what edgexray rewrites after export (threshold, calibration block, scope
statistics, the file name) lives in edgexray.json only, so rewriting it never changes the
identity, and records, reports, SRs and bundles name the model by a sha256 that
survives calibration. A file without associated files is all flatbuffer: its identity
is the sha256 of the whole file, as it was before models carried their metadata.

Reading needs only the standard library (zipfile, hashlib); the flatbuffer itself is
read by the interpreter, and the ModelMetadata is written and read on the host
(edgexray/export/metadata.py).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InferenceError

SIDECAR_FILE = "edgexray.json"
LABELS_FILE = "labels.txt"
# The associated files' zip is written the same way every time (no clock, fixed modes), so
# the same model and sidecar always make the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_MODE = 0o644 << 16
_END_RECORD, _END_RECORD_SIZE = b"PK\x05\x06", 22  # the zip's end of central directory
# Far above any sidecar (the shipped one, with its 96x96 whitening matrix: 87 KB); a file
# claiming more is not read into memory.
MAX_ASSOCIATED_FILE = 64 << 20


@dataclass(frozen=True)
class ModelFile:
    """A model file's parts: the flatbuffer's size and sha256 (the identity), and the
    associated files by name."""

    size: int
    flatbuffer_size: int
    sha256: str
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def sidecar_bytes(self) -> bytes | None:
        return self.files.get(SIDECAR_FILE)


def read(path: str | Path) -> ModelFile:
    """Split a model file into its flatbuffer and its associated files.

    Raises:
        InferenceError: the file cannot be read, or its associated files are damaged or
            compressed.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InferenceError(f"{path}: cannot read the model ({err.strerror or err})") from None
    return parse(data, str(path))


def parse(data: bytes, name: str = "the model") -> ModelFile:
    """`read` of a model file's bytes (name says which file in errors)."""
    start, files = _associated_files(data, name)
    return ModelFile(len(data), start, hashlib.sha256(data[:start]).hexdigest(), files)


def identity(path: str | Path) -> str:
    """The sha256 that identifies a model: that of its flatbuffer (see the module doc)."""
    return read(path).sha256


def _associated_files(data: bytes, name: str) -> tuple[int, dict[str, bytes]]:
    """Where the appended zip starts (len(data) without one) and its files."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except Exception:  # no zip, or bytes of the graph that happen to look like one
        return len(data), {}  # a bare flatbuffer: no associated files
    with archive:
        # The zip ends the file (as Java's and C++'s readers require): bytes after it would
        # be read by some readers and not others.
        end = len(data) - _END_RECORD_SIZE - len(archive.comment)
        if data[end : end + 4] != _END_RECORD:
            raise InferenceError(f"{name}: bytes after its associated files (a changed file)")
        members = archive.infolist()
        names = [info.filename for info in members]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:  # readers would disagree on which one counts
            raise InferenceError(f"{name}: associated file {twice[0]} appears twice")
        # zipfile has already shifted every offset by the bytes before the zip.
        start = min([archive.start_dir] + [info.header_offset for info in members])
        if not 0 < start <= len(data):
            raise InferenceError(f"{name}: its associated files are not after the model")
        files = {}
        for info in members:
            if info.compress_type != zipfile.ZIP_STORED:
                raise InferenceError(
                    f"{name}: associated file {info.filename} is compressed; LiteRT's "
                    "metadata readers need them stored"
                )
            if info.file_size > MAX_ASSOCIATED_FILE:
                raise InferenceError(f"{name}: associated file {info.filename} is too large")
            try:
                files[info.filename] = archive.read(info)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
                raise InferenceError(
                    f"{name}: associated file {info.filename} is damaged ({err})"
                ) from None
    return start, files


# --- writing (the host writes models; the format lives here, beside its reader) ----------


def sidecar_text(sidecar: dict) -> str:
    """The sidecar as edgexray.json holds it, and as the readable copy beside the model:
    indented JSON, but each list of numbers on one line (the scope block's whitening
    matrix is 96 rows of 96 numbers, not 9216 lines). Strict JSON: no NaN."""
    plain = json.dumps(sidecar, indent=2, allow_nan=False)
    text = _NUMBER_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", plain)
    if json.loads(text) != sidecar:  # a string that looked like a list: keep it as it was
        text = plain
    return text + "\n"


_NUMBER_LIST = re.compile(r"\[\s*((?:-?[0-9][0-9.eE+-]*,?\s*)+)\]")


def labels_text(sidecar: dict) -> str:
    """labels.txt: the label of each value of output 0, one a line. The one output value
    speaks of the positive class (the negative one is its complement), so it is one line."""
    return f"{sidecar['labels'][1]}\n"


def pack(flatbuffer: bytes, files: dict[str, bytes]) -> bytes:
    """The model file: the flatbuffer, then the files as a stored zip appended to it, as
    tflite-support's MetadataPopulator appends them (offsets counted from the file's
    start). Deterministic: the same inputs give the same bytes."""
    buffer = io.BytesIO()
    buffer.write(flatbuffer)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = _ZIP_MODE
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, content)
    return buffer.getvalue()


def with_sidecar(model: bytes, sidecar: dict, name: str = "the model") -> bytes:
    """The model file with `sidecar` as its edgexray.json (and labels.txt to match): the
    flatbuffer, and so the identity, keeps every byte; other associated files are kept.

    Raises:
        InferenceError: the sidecar's sha256 is not this model's identity.
    """
    parts = parse(model, name)
    if sidecar.get("sha256") != parts.sha256:
        raise InferenceError(
            f"{name}: the sidecar's sha256 is not this model's ({parts.sha256[:12]}…)"
        )
    files = {
        **parts.files,
        LABELS_FILE: labels_text(sidecar).encode(),
        SIDECAR_FILE: sidecar_text(sidecar).encode(),
    }
    return pack(model[: parts.flatbuffer_size], files)
