"""The one place that imports Keras.

tensorflow-model-optimization 0.8 only understands Keras 2, which ships as `tf_keras`.
TensorFlow reads TF_USE_LEGACY_KERAS when it is first imported, so it has to be set
here, before any TensorFlow import. Every other module does `from edgexray.compat import
keras, tf` inside the functions that need them, never at module level.
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ start-up chatter (oneDNN notices, missing CUDA) drowns the progress
# display on a CPU-only machine; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["keras", "tf"]
