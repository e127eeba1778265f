"""Standalone inference: this folder depends on nothing from edgexray or TensorFlow."""

from pathlib import Path

# The shipped reference model, package data (so a plain `pip install` has it too): what
# `edgexray predict` and `edgexray bundle` run when no model is given.
REFERENCE_MODEL = Path(__file__).resolve().parents[1] / "models" / "edgexray-int8.tflite"
