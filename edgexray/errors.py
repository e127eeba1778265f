"""Errors the CLI turns into one-line messages and exit codes."""


class EdgexrayError(Exception):
    """Bad input or a missing artifact: the CLI prints the message and exits 2."""

    exit_code = 2


INSTALL_TRAIN = 'pip install "edgexray[train]"'


class TrainingExtraMissing(EdgexrayError):
    """TensorFlow, tf-keras or tensorflow-model-optimization cannot be imported: the base
    install, without the `train` extra (raised by edgexray/compat.py, the one import site)."""

    def __init__(self, err: ImportError):
        super().__init__(
            f"this needs TensorFlow, which this install lacks ({err}); for training, pruning, "
            f"quantization and .keras models run: {INSTALL_TRAIN}"
        )


def check_config(kind: str, checks: dict[str, bool]) -> None:
    """Raise one EdgexrayError listing every failed check of a config.

    Args:
        kind: what is checked, e.g. "training config".
        checks: message -> whether that check passed.
    """
    failed = [message for message, ok in checks.items() if not ok]
    if failed:
        raise EdgexrayError(f"bad {kind}: " + "; ".join(failed))


def check_threshold(value, source: str) -> float:
    """The decision threshold read from `source`, or EdgexrayError naming it.

    Every threshold from any file or option comes through here: JSON readers accept NaN
    and Infinity, and a NaN threshold compares false with every probability, which calls
    every film normal and would switch the recall gate off.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise EdgexrayError(f"{source}: threshold must be a number, got {value!r}")
    if not 0.0 <= value <= 1.0:  # False for NaN as well
        raise EdgexrayError(f"{source}: threshold {value} is not a probability in [0, 1]")
    return float(value)


class UnsafeCheckpoint(EdgexrayError):
    """A pickled checkpoint names a global beyond the few that rebuild tensors: refused
    before anything it names is called (edgexray/pipeline/backbones/torch_checkpoint.py)."""
