"""The TFLite interpreter: the lightest one installed, and the model's tensors in and out.

Quantized tensors are quantized and dequantized with the scale and zero point the
interpreter reports for them, never with values written down elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InferenceError
from .preprocess import normalize

MAX_THREADS = 64  # far above any device's cores; huge values crash the interpreter


def check_threads(threads: int | None) -> None:
    """Refuse a thread count outside 1..MAX_THREADS (None lets the runtime choose)."""
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise InferenceError(f"threads must be between 1 and {MAX_THREADS}, not {threads}")


def interpreter_class():
    """The lightest TFLite interpreter available: LiteRT, tflite-runtime, then TensorFlow."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            try:
                from tensorflow.lite import Interpreter  # the heavy last resort
            except ImportError:
                raise InferenceError(
                    "no TFLite interpreter: pip install ai-edge-litert (or tflite-runtime)"
                ) from None
    return Interpreter


def load_interpreter(model_path: str | Path, threads: int | None = None):
    """An interpreter for a .tflite file; raises InferenceError if it cannot be loaded."""
    try:
        return interpreter_class()(model_path=str(model_path), num_threads=threads)
    except (ValueError, RuntimeError, OSError) as err:
        raise InferenceError(f"{model_path}: not a loadable .tflite model ({err})") from None


def sigmoid(logit):
    """The probability of a logit, without overflow for large negative logits."""
    logit = np.asarray(logit, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logit))


def run_interpreter(interpreter, image: np.ndarray, output_kind: str) -> float:
    """Run one float image (H, W, 1) in [0, 1] and return the pneumonia probability.

    Quantized models get their input quantized and their output dequantized with the
    scale and zero-point the interpreter reports for those tensors; a model whose sidecar
    output "kind" is "logit" gets the sigmoid taken here.
    """
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    output = invoke(interpreter, input_batch(image, input_detail), input_detail, output_detail)
    return to_probability(output, output_kind)


def to_probability(output: float, output_kind: str) -> float:
    """The pneumonia probability from the model's dequantized output (OUTPUT_KINDS).

    Raises:
        InferenceError: the value is not a probability in [0, 1] (a logit model whose
            sidecar says "probability"): it is never printed or compared as one.
    """
    probability = float(sigmoid(output)) if output_kind == "logit" else output
    if not 0.0 <= probability <= 1.0:  # also refuses NaN
        raise InferenceError(
            f"the model gave {probability:g}, not a probability in [0, 1]: its sidecar's "
            f"output.kind {output_kind!r} does not describe this model"
        )
    return probability


def invoke(interpreter, batch: np.ndarray, input_detail: dict, output_detail: dict) -> float:
    """Run one ready input tensor (1, H, W, 1) and return its dequantized output."""
    interpreter.set_tensor(input_detail["index"], batch)
    interpreter.invoke()
    output = float(interpreter.get_tensor(output_detail["index"]).reshape(-1)[0])
    if np.issubdtype(output_detail["dtype"], np.integer):
        scale, zero_point = output_detail["quantization"]
        output = (output - zero_point) * scale
    return output


def dequantized(values: np.ndarray, detail: dict) -> np.ndarray:
    """An output tensor's values as float64, dequantized when the tensor is integer."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.issubdtype(detail["dtype"], np.integer):
        scale, zero_point = detail["quantization"]
        values = (values - zero_point) * scale
    return values


def input_batch(image: np.ndarray, input_detail: dict) -> np.ndarray:
    """The input tensor (1, H, W, 1) for a float image, quantized when the input is integer."""
    batch = image[np.newaxis].astype(np.float32)
    scale, zero_point = input_detail["quantization"]
    if np.issubdtype(input_detail["dtype"], np.integer):
        info = np.iinfo(input_detail["dtype"])
        batch = np.clip(np.round(batch / scale + zero_point), info.min, info.max)
    return batch.astype(input_detail["dtype"])


def levels_are_input(input_detail: dict) -> bool:
    """True when the input is uint8 and quantizing v / 255 gives back v for every grey level
    v (scale 1/255, zero point 0): then the 8-bit image is the input tensor as it is."""
    if np.dtype(input_detail["dtype"]) != np.uint8:
        return False
    levels = np.arange(256, dtype=np.uint8).reshape(256, 1, 1)
    return np.array_equal(
        input_batch(normalize(levels, "scale"), input_detail).reshape(-1), levels.reshape(-1)
    )


def output_range_problem(output_detail: dict, output_kind: str) -> str | None:
    """Why an integer output cannot be what output.kind says, or None.

    A quantized output's scale and zero point bound every value it can take; a sigmoid's
    output lies in [0, 1], so a wider range means the model emits the logit. (A float
    output has no such bound: `to_probability` checks each value instead.)
    """
    if output_kind != "probability" or not np.issubdtype(output_detail["dtype"], np.integer):
        return None
    scale, zero_point = output_detail["quantization"]
    if not scale:
        return None
    info = np.iinfo(output_detail["dtype"])
    low, high = (info.min - zero_point) * scale, (info.max - zero_point) * scale
    if low < -1e-6 or high > 1.0 + 1e-6:
        return (
            f"the sidecar says output.kind 'probability', but the output ranges over "
            f"[{low:.3g}, {high:.3g}]: the model emits the logit"
        )
    return None
