"""Errors the CLI turns into one-line messages and exit codes."""


class EdgexrayError(Exception):
    """Bad input or a missing artifact: the CLI prints the message and exits 2."""

    exit_code = 2


def check_config(kind: str, checks: dict[str, bool]) -> None:
    """Raise one EdgexrayError listing every failed check of a config.

    Args:
        kind: what is checked, e.g. "training config".
        checks: message -> whether that check passed.
    """
    failed = [message for message, ok in checks.items() if not ok]
    if failed:
        raise EdgexrayError(f"bad {kind}: " + "; ".join(failed))
