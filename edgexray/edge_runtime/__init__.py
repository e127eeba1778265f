"""Standalone inference: this folder depends on nothing from edgexray or TensorFlow."""
