"""What native libraries print straight to stderr, kept off the user's screen.

TensorFlow's C++ start-up notices (oneDNN, CUDA drivers on a CPU-only machine), the
TFLite converter's "fully_quantize: 0, ..." lines and LiteRT's "INFO: Created TensorFlow
Lite XNNPACK delegate for CPU." (printed by the first interpreter a process allocates)
bypass Python's logging, so they are caught at the file descriptor. Nothing useful is
lost: what was caught is replayed when the block fails, and `show(True)` (a command's
--verbose) lets all of it through.

No TensorFlow here: the base install's commands use it too.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

_shown = [False]


def show(verbose: bool) -> None:
    """Let native chatter through (True) or keep it off the screen (False, the default).

    Call before TensorFlow is imported: its own log level is read once, at import (without
    --verbose, edgexray/compat.py sets it to errors only, unless the environment says).
    """
    _shown[0] = verbose
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


def shown() -> bool:
    return _shown[0]


@contextlib.contextmanager
def quiet():
    """Keep what C++ code prints to stderr inside the block off the terminal; replay it
    if the block raises. A no-op after show(True)."""
    if _shown[0]:
        yield
        return
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved_stderr, 2)
            caught.seek(0)
            os.write(2, caught.read())
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
