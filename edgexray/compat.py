"""The one place that imports Keras.

tensorflow-model-optimization 0.8 only understands Keras 2, which ships as `tf_keras`.
TensorFlow reads TF_USE_LEGACY_KERAS when it is first imported, so it has to be set
here, before any TensorFlow import. Every other module does `from edgexray.compat import
keras, tf` inside the functions that need them, never at module level.
"""

import os
import tempfile

os.environ["TF_USE_LEGACY_KERAS"] = "1"
# TensorFlow's C++ notices (oneDNN, missing CUDA drivers on a CPU-only machine) drown the
# progress display; Python exceptions still carry every real error. Set it to 0 to see them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_quietly():
    """Import TensorFlow with its start-up chatter (printed before any log level applies)
    kept off the terminal; replayed if the import fails, so nothing useful is lost."""
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as chatter:
        os.dup2(chatter.fileno(), 2)
        try:
            import tensorflow
            import tf_keras
        except BaseException:
            os.dup2(saved_stderr, 2)
            chatter.seek(0)
            os.write(2, chatter.read())
            raise
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
    return tensorflow, tf_keras


tf, keras = _import_quietly()

__all__ = ["keras", "tf"]
