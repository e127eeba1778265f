"""One prediction through TensorFlow, as a program of its own (coldstart's other side).

coldstart runs it by path in a fresh process:
`python tensorflow_predict.py RUNTIME MODEL IMAGE INPUT_SPEC`. It preprocesses with the
edge runtime as a device has it (the package edge_runtime in the folder RUNTIME), then
runs MODEL with TensorFlow's own tf.lite.Interpreter, or a .keras model with tf_keras
through edgexray (of the tree this file is in), and prints {"probability": p} as the edge
script does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    runtime, model, image, input_spec = argv[0], argv[1], argv[2], json.loads(argv[3])
    sys.path.insert(0, runtime)
    from edge_runtime.interpreter import run_interpreter, sigmoid
    from edge_runtime.preprocess import preprocess

    if model.endswith(".keras"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from edgexray import artifacts
        from edgexray.pipeline.model import emits_logit

        net = artifacts.load_keras(model)
        output = float(net(preprocess(image, input_spec)[None], training=False)[0, 0])
        probability = float(sigmoid(output)) if emits_logit(net) else output
    else:
        import tensorflow as tf

        interpreter = tf.lite.Interpreter(model_path=model)
        interpreter.allocate_tensors()
        with open(model[: -len(".tflite")] + ".json") as handle:
            kind = json.load(handle)["output"]["kind"]  # load_sidecar requires it
        probability = run_interpreter(interpreter, preprocess(image, input_spec), kind)
    print(json.dumps({"probability": probability}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
