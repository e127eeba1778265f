"""Standalone inference: this folder depends on nothing from edgexray or TensorFlow."""

import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The shipped reference model, package data (so a plain `pip install` has it too): what
# `edgexray predict` and `edgexray bundle` run when no model is given.
REFERENCE_MODEL = HERE.parents[0] / "models" / "edgexray-int8.tflite"
# What a device needs next to each other: infer.py is the script, and imports the others
# as modules of its own folder when run as a script (bundles, tests' device folders).
DEVICE_FILES = ("infer.py", "scope.py")


def copy_runtime(folder: Path) -> None:
    """Copy the device runtime's files (DEVICE_FILES) into folder."""
    for name in DEVICE_FILES:
        shutil.copyfile(HERE / name, Path(folder) / name)
