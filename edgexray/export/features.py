"""Expose a converted model's pooled features as a second output, for the scope guard.

The out-of-scope guard (edgexray/edge_runtime/scope.py) measures how far a film's
penultimate features, the global-average-pooled activations the last Dense layer reads,
lie from the training films'. Those features are already a tensor of every converted
model; this module only lists that tensor as a second output of the subgraph (and of its
signature), with TensorFlow's flatbuffer_utils. No operator, weight or quantization
parameter is touched, so the first output, the pneumonia logit, keeps every byte: checked
on all 312 test/ films for the shipped model (tests/export/test_features.py, benchmarks/README.md).

Adding the output to a finished .tflite, rather than converting a two-output Keras model,
is what lets the shipped reference model gain the features without a retrain or a
re-quantization that could move a single prediction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgexray import artifacts
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.errors import EdgexrayError
from edgexray.export import metadata
from edgexray.pipeline import scope

FEATURE_OUTPUT_NAME = "pooled_features"  # the signature's name of the second output
# Ops that only change the dtype or shape of the logit between the last Dense and the model
# output (full-int8 models end in QUANTIZE int8 -> uint8; float16 in nothing at all).
_PASS_THROUGH = ("QUANTIZE", "DEQUANTIZE", "RESHAPE")


def _flatbuffer_utils():
    from tensorflow.lite.tools import flatbuffer_utils

    return flatbuffer_utils


def _op_name(model, operator) -> str:
    from tensorflow.lite.python import schema_util

    code = model.operatorCodes[operator.opcodeIndex]
    builtin = schema_util.get_builtin_code_from_operator_code(code)
    names = {
        value: name for name, value in vars(_schema().BuiltinOperator).items() if name.isupper()
    }
    return names.get(builtin, str(builtin))


def _schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def feature_tensor(model) -> int:
    """Index of the tensor the last FULLY_CONNECTED reads: the pooled features.

    Walks back from the first output through dtype/shape-only ops to the Dense layer.

    Raises:
        EdgexrayError: the model does not end in a Dense layer fed by a (1, N) tensor.
    """
    subgraph = model.subgraphs[0]
    producer = {int(t): op for op in subgraph.operators for t in op.outputs}
    tensor = int(subgraph.outputs[0])
    while tensor in producer:
        operator = producer[tensor]
        name = _op_name(model, operator)
        if name == "FULLY_CONNECTED":
            features = int(operator.inputs[0])
            shape = list(subgraph.tensors[features].shape)
            if len(shape) != 2 or shape[0] != 1 or shape[1] < 2:
                raise EdgexrayError(f"the last Dense layer reads a tensor of shape {shape}")
            return features
        if name not in _PASS_THROUGH:
            break
        tensor = int(operator.inputs[0])
    raise EdgexrayError("the model's output is not made by a Dense layer: no pooled features")


def with_feature_output(tflite_bytes: bytes) -> bytes:
    """The same model with its pooled features as output 1 (output 0 unchanged).

    A model that already lists them as its second output is returned as it is.

    Raises:
        EdgexrayError: the model has no recognisable pooled features, or already has
            another second output.
    """
    utils = _flatbuffer_utils()
    model = utils.read_model_from_bytearray(bytearray(tflite_bytes))
    subgraph = model.subgraphs[0]
    features = feature_tensor(model)
    outputs = [int(t) for t in subgraph.outputs]
    if outputs[1:] == [features]:
        return bytes(tflite_bytes)
    if len(outputs) != 1:
        raise EdgexrayError(f"the model has {len(outputs)} outputs; expected only the logit")
    subgraph.outputs = outputs + [features]
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == 0:
            mapping = _schema().TensorMapT()
            mapping.name = FEATURE_OUTPUT_NAME
            mapping.tensorIndex = features
            signature.outputs = list(signature.outputs or []) + [mapping]
    return bytes(utils.convert_object_to_bytearray(model))


def add_guard(
    model_path: Path,
    train_grays: list[np.ndarray],
    val_grays: list[np.ndarray],
    *,
    train_counts: dict | None = None,
    val_counts: dict | None = None,
    coverage: float = scope.COVERAGE,
) -> dict:
    """Give a finished model its pooled features as a second output (the first output
    keeps every byte, see `with_feature_output`), write its metadata for the new graph
    (a new sha256), and fit and write the scope block. Used for the shipped reference
    model, which predates the guard.

    Returns:
        The scope block.
    """
    model_path = Path(model_path)
    tflite_bytes = with_feature_output(model_path.read_bytes())
    if tflite_bytes != model_path.read_bytes():
        sidecar = dict(load_sidecar(model_path))
        sidecar.pop("scope", None)  # statistics of the old graph no longer apply
        artifacts.write_model(model_path, *metadata.embed(tflite_bytes, sidecar))
    return scope.attach(
        model_path,
        train_grays,
        val_grays,
        train_counts=train_counts,
        val_counts=val_counts,
        coverage=coverage,
    )
