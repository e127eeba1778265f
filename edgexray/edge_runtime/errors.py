"""The edge runtime's errors and exit codes: the floor every other module stands on.

A batch exits 0 when every film was read and in scope, 3 when some could not be read
(their records say why), else 4 when some were out of scope (their label OUT_OF_SCOPE),
and 2 for bad arguments, a missing, corrupt or mismatched model, or results that could
not be written. 3 wins over 4: an unreadable film has no answer at all, an out-of-scope
one is refused with a reason in its record; either way the records must be read.
"""

from __future__ import annotations

EXIT_OK, EXIT_BAD_INPUT, EXIT_UNREADABLE, EXIT_OUT_OF_SCOPE = 0, 2, 3, 4


class InferenceError(Exception):
    """A problem with the model, its sidecar or the arguments (exit code 2)."""


class ImageError(Exception):
    """One image could not be read; the run goes on with the others."""


class OutputError(InferenceError):
    """The results could not be written (a full disk, a closed stream): exit code 2."""


def exit_code(unreadable: int, out_of_scope: int) -> int:
    """The exit code of a batch with that many unreadable and out-of-scope films."""
    return EXIT_UNREADABLE if unreadable else EXIT_OUT_OF_SCOPE if out_of_scope else EXIT_OK
