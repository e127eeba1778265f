"""Standalone inference: this folder depends on nothing from edgexray or TensorFlow."""

from pathlib import Path

# The shipped reference model: what `edgexray predict` runs when no --model is given.
REFERENCE_MODEL = Path(__file__).resolve().parents[2] / "models" / "edgexray-int8.tflite"
