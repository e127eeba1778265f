"""Records on a stream, one per film as soon as it is classified: JSON lines or CSV."""

from __future__ import annotations

import csv
import json

from ..errors import OutputError, exit_code
from ..readers.identity import FIELDS as IDENTITY_FIELDS

# Every field a record may have, in the CSV's column order: the film, whose it is, the answer.
RECORD_FIELDS = (
    "path",
    *IDENTITY_FIELDS,
    "probability",
    "label",
    "threshold",
    "latency_ms",
    "error",
    "quality_warning",
    "rendering",
    "overlay",
    "heatmap",
    "in_scope",
    "scope_reason",
    "scope_distance",
)
# A spreadsheet evaluates a cell that starts with one of these as a formula: a film named
# =HYPERLINK(...).jpeg must stay text (OWASP's CSV injection advice: prefix a quote).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class JsonLines:
    """One JSON object per line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, record: dict) -> None:
        emit(self.stream, self.stream.write, json.dumps(record) + "\n")


class CsvRows:
    """A header, then one row per record (RECORD_FIELDS; text that a spreadsheet would
    run as a formula is prefixed with a quote)."""

    def __init__(self, stream):
        self.stream = stream
        self.writer = csv.DictWriter(stream, RECORD_FIELDS, lineterminator="\n")
        emit(stream, self.writer.writerow, {field: field for field in RECORD_FIELDS})

    def write(self, record: dict) -> None:
        emit(self.stream, self.writer.writerow, {k: _cell(v) for k, v in record.items()})


def _cell(value):
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


FORMATS = {"jsonl": JsonLines, "csv": CsvRows}


class Records:
    """The records sink: each record written and flushed as soon as it comes, so a watcher
    or a pipe sees each result; it counts what the exit code depends on.

    Raises (from add):
        OutputError: a write or flush failed; what was not flushed is lost, so the caller
            must not treat those films as done.
        BrokenPipeError: the reader went away.
    """

    needs_map = False

    def __init__(self, stream, fmt: str = "jsonl"):
        self.writer = FORMATS[fmt](stream)
        self.unreadable = self.out_of_scope = 0

    def add(self, film, explanation=None) -> None:
        record = film.record
        self.unreadable += "error" in record
        self.out_of_scope += record.get("in_scope") is False
        self.writer.write(record)

    def close(self) -> None:
        pass

    def exit_code(self) -> int:
        """EXIT_UNREADABLE when some films could not be read, else EXIT_OUT_OF_SCOPE when
        some were out of scope, else EXIT_OK."""
        return exit_code(self.unreadable, self.out_of_scope)


def emit(stream, write, item) -> None:
    """write(item), flushed at once; a failed write (a full disk) becomes OutputError,
    while BrokenPipeError passes through."""
    try:
        write(item)
        stream.flush()
    except BrokenPipeError:
        raise
    except OSError as err:
        raise OutputError(f"cannot write the results: {err.strerror or err}") from None
