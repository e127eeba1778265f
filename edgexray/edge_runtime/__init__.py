"""Standalone inference: this folder depends on nothing from edgexray or TensorFlow.

A bundle ships it as the top-level package `edge_runtime`; a program that must measure it
alone (benchmarks) imports it the same way, with RUNTIME_ROOT on sys.path.
"""

from pathlib import Path

# The folder holding this package: on sys.path, `import edge_runtime` is this package as a
# device has it, without importing edgexray.
RUNTIME_ROOT = Path(__file__).resolve().parent.parent

# The shipped reference model, package data (so a plain `pip install` has it too): what
# `edgexray predict` and `edgexray bundle` run when no model is given.
REFERENCE_MODEL = Path(__file__).resolve().parents[1] / "models" / "edgexray-int8.tflite"
