"""The one place that imports Keras.

tensorflow-model-optimization 0.8 only understands Keras 2, which ships as `tf_keras`.
TensorFlow reads TF_USE_LEGACY_KERAS when it is first imported, so it has to be set
here, before any TensorFlow import. Every other module does `from edgexray.compat import
keras, tf` inside the functions that need them, never at module level.

It is also the one place that knows TensorFlow is optional: the base install (`pip install
edgexray`) is the runtime and the CLI, and training, pruning and quantization come with the
`train` extra. Without it, importing this module raises errors.TrainingExtraMissing, an
EdgexrayError, so every command that reaches TensorFlow stops with one line naming the
`pip install` to run, and exit code 2.
"""

import os

from edgexray.chatter import quiet as native_stderr_quiet
from edgexray.errors import INSTALL_TRAIN, TrainingExtraMissing

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ notices (oneDNN, missing CUDA drivers on a CPU-only machine) drown the
# progress display; Python exceptions still carry every real error. Set it to 0 to see them
# (a command's --verbose does: chatter.py).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


try:
    with native_stderr_quiet():
        import tensorflow as tf
        import tf_keras as keras
except ImportError as err:
    raise TrainingExtraMissing(err) from None


def _use_every_core() -> None:
    """Each op on every core, and two ops at once (a layer's weight and input gradients are
    independent). On the 2-core AVX2 host an epoch took 62 s at 180% CPU so, against 81 s
    at 131% with TensorFlow's own default (benchmarks/README.md, "Speed").
    TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS, when set, still decide."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        if "TF_NUM_INTRAOP_THREADS" not in os.environ:
            tf.config.threading.set_intra_op_parallelism_threads(cores or 1)
        if "TF_NUM_INTEROP_THREADS" not in os.environ:
            tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:  # TensorFlow already ran ops in this process: its threads stay
        pass


_use_every_core()


def import_tfmot():
    """tensorflow-model-optimization, imported only after TF_USE_LEGACY_KERAS is set
    (imported on its own first, it would bind to Keras 3 and fail on tf_keras models)."""
    try:
        import tensorflow_model_optimization
    except ImportError as err:
        raise TrainingExtraMissing(err) from None
    return tensorflow_model_optimization


__all__ = [
    "INSTALL_TRAIN",
    "TrainingExtraMissing",
    "import_tfmot",
    "keras",
    "native_stderr_quiet",
    "tf",
]
