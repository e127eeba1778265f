"""Errors the CLI turns into one-line messages and exit codes."""


class EdgexrayError(Exception):
    """Bad input or a missing artifact: the CLI prints the message and exits 2."""

    exit_code = 2
