"""Keras model → .tflite bytes, one small function per kind of conversion, plus the sidecar.

The sidecar is the contract with every consumer: the edge runtime, `edgexray evaluate`,
the bundles. It is written inside the .tflite with the standard TFLite metadata
(export/metadata.py), and as a readable copy X.json next to X.tflite. Its quantization
fields are read back from the interpreter after conversion, never assumed.
"""

from __future__ import annotations

import gzip
import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from edgexray import __version__, artifacts, chatter
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.interpreter import interpreter_class, load_interpreter
from edgexray.edge_runtime.sidecar import SIDECAR_SCHEMA, load_sidecar
from edgexray.errors import EdgexrayError
from edgexray.export import metadata
from edgexray.pipeline.data import LABELS

log = logging.getLogger("edgexray")


def _converter(model):
    from edgexray.compat import tf

    return tf.lite.TFLiteConverter.from_keras_model(model)


def _convert(converter) -> bytes:
    """Run a converter without its native stderr chatter and its expected warning."""
    from edgexray.compat import native_stderr_quiet

    with native_stderr_quiet(), warnings.catch_warnings():
        # uint8 input needs no input statistics: the converter's warning is expected.
        warnings.filterwarnings("ignore", "Statistics for quantized inputs")
        return converter.convert()


def to_float32(model) -> bytes:
    """Plain float32 conversion."""
    return _convert(_converter(model))


def to_float16(model) -> bytes:
    """float16 weights, float32 compute on CPUs: half the size, same accuracy."""
    from edgexray.compat import tf

    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    return _convert(converter)


def to_dynamic_range(model) -> bytes:
    """int8 weights, float input/output and activations quantized on the fly."""
    from edgexray.compat import tf

    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return _convert(converter)


def to_full_int8(model, representative_images: Iterable[np.ndarray] | None = None) -> bytes:
    """Full-integer model with uint8 input and output (Android's convention).

    Args:
        model: a float Keras model, or a QAT model (which carries its own ranges, so
            representative_images may then be None).
        representative_images: float model inputs (H, W, 1) drawn from the train split
            to calibrate activation ranges.
    """
    from edgexray.compat import tf

    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative_images is not None:
        images = list(representative_images)

        def representative_dataset():
            for image in images:
                yield [image[np.newaxis].astype(np.float32)]

        converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    return _convert(converter)


def output_kind(keras_model) -> str:
    """ "logit" for models whose last layer is linear (the host takes the sigmoid), else
    "probability"; the sidecar's output "kind"."""
    from edgexray.pipeline.model import emits_logit

    return "logit" if emits_logit(keras_model) else "probability"


OUTPUT_MEANINGS = {
    "logit": "logit of {positive}: probability = 1 / (1 + exp(-logit)), taken on the host",
    "probability": "probability of {positive} (sigmoid in the model)",
}


def write_tflite(
    tflite_bytes: bytes,
    path: Path,
    *,
    method: str,
    method_config: dict,
    input_spec: dict,
    threshold: float,
    target_recall: float,
    sparsity: float,
    output_kind: str,
    check_image: np.ndarray | None = None,
) -> dict:
    """Write X.tflite carrying its metadata, and the readable copy X.json, atomically,
    after checking the model runs.

    Args:
        output_kind: what the one output value is (OUTPUT_KINDS), from
            `output_kind(keras_model)` of the model it was converted from.

    Returns:
        The sidecar.

    Raises:
        EdgexrayError: the converter produced an empty or unloadable model.
    """
    path = Path(path)
    if not tflite_bytes:
        raise EdgexrayError(f"the {method} conversion produced an empty model")
    try:
        interpreter = interpreter_class()(model_content=bytes(tflite_bytes))
        with chatter.quiet():  # the first allocation of a process announces XNNPACK
            interpreter.allocate_tensors()
        input_detail = interpreter.get_input_details()[0]
        output_detail = interpreter.get_output_details()[0]
        if check_image is not None:
            from edgexray.edge_runtime.interpreter import run_interpreter

            run_interpreter(interpreter, check_image, output_kind)
    except Exception as err:
        raise EdgexrayError(f"{path.name} does not run in the interpreter: {err}") from None
    sidecar = {
        "schema": SIDECAR_SCHEMA,
        "edgexray_version": __version__,
        "model_file": path.name,
        "sha256": None,  # the identity of the model with its metadata, set by embed
        "method": method,
        "method_config": method_config,
        "labels": list(LABELS),
        "positive_label": LABELS[1],
        "input": {**input_spec, **metadata.tensor_facts(input_detail)},
        "output": {
            **metadata.tensor_facts(output_detail),
            "kind": output_kind,
            "meaning": OUTPUT_MEANINGS[output_kind].format(positive=LABELS[1]),
        },
        "threshold": float(threshold),
        "target_recall": float(target_recall),
        "sparsity": float(sparsity),
    }
    model, sidecar = metadata.embed(bytes(tflite_bytes), sidecar)
    artifacts.write_model(path, model, sidecar)
    try:  # what every consumer will do with it
        load_sidecar(path)
        load_interpreter(path).allocate_tensors()
    except (InferenceError, ValueError, RuntimeError) as err:
        raise EdgexrayError(f"{path.name} does not load with its metadata: {err}") from None
    return sidecar


# --- measuring a converted model ------------------------------------------------------

# Ops whose second input is a kernel that pruning can make sparse.
WEIGHT_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def file_sizes(tflite_bytes: bytes) -> dict:
    """Raw and gzip -9 size in bytes; gzip shows what pruning saves in a download."""
    return {
        "size_bytes": len(tflite_bytes),
        "gzip_bytes": len(gzip.compress(tflite_bytes, compresslevel=9, mtime=0)),
    }


def weight_stats(tflite_bytes: bytes) -> dict:
    """Parameter count and kernel sparsity measured in a converted model's own tensors.

    A tensor is a weight when some operator reads it, none writes it and it is not the
    model input. Float and int8 weights count whole; int32 tensors only in the bias slot
    of a conv/dense op, so shape and axis constants are left out. Sparsity is the share of
    exactly-zero values in the conv/dense kernels (the op's second input, behind a
    DEQUANTIZE for float16); int8 weights are symmetric, so a zero stays a stored 0.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the XNNPACK delegate, which would fold the ops out of view.
    interpreter = Interpreter(
        model_content=tflite_bytes,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # the public API lists tensors, not the graph
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    written = {t for op in ops for t in op["outputs"]}
    model_inputs = {d["index"] for d in interpreter.get_input_details()}
    constants = {t for op in ops for t in op["inputs"] if t >= 0} - written - model_inputs
    layers = [op for op in ops if op["op_name"] in WEIGHT_OPS and len(op["inputs"]) > 1]
    biases = {op["inputs"][2] for op in layers if len(op["inputs"]) > 2}
    producer = {t: op for op in ops for t in op["outputs"]}
    parameters = 0
    for index in constants:
        dtype = np.dtype(details[index]["dtype"])
        if dtype.kind == "f" or dtype == np.int8 or index in biases:
            parameters += int(np.prod(details[index]["shape"]))
    total = zeros = 0
    for op in layers:
        kernel = op["inputs"][1]
        if kernel in producer and producer[kernel]["op_name"] == "DEQUANTIZE":
            kernel = producer[kernel]["inputs"][0]
        if kernel in constants:
            values = interpreter.get_tensor(kernel)
            total += values.size
            zeros += int(np.count_nonzero(values == 0))
    return {"parameters": parameters, "sparsity": zeros / total if total else None}
