"""edgexray: a chest X-ray pneumonia classifier, from training to a cheap device.

Importing this package is cheap on purpose: TensorFlow is imported lazily, inside the
functions that need it, so the CLI and the edge runtime start fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`edgexray.Classifier`, imported when asked for: `import edgexray` stays instant."""
    if name == "Classifier":
        from edgexray.edge_runtime.classifier import Classifier

        return Classifier
    raise AttributeError(f"module 'edgexray' has no attribute {name!r}")
