"""The node's log: its own lines at INFO, the DICOM libraries' warnings and errors only,
each on one line. The node's process and its heatmap process (outbox.py) log alike."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(message)s"
LIBRARIES = ("pynetdicom", "highdicom")


class _OneLine(logging.Filter):
    """A library's log record without its traceback: a junk connection (a port scan, a
    reset, garbage bytes) is one line in the node's log, not twenty."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in LIBRARIES:
            record.exc_info = record.exc_text = None
        return True


def quiet_libraries() -> None:
    """The DICOM libraries log one line per association or report at INFO: only their
    warnings and errors reach the node's log, each on one line (the filter sits on the
    log's handlers: a library logs from child loggers, which its own logger's filters do
    not see)."""
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _OneLine) for f in handler.filters):
            handler.addFilter(_OneLine())


def configure() -> None:
    """The node's log on stderr, as `serve` sets it up (a process started by the node)."""
    logging.basicConfig(level=logging.INFO, format=FORMAT)
    quiet_libraries()
