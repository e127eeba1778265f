"""The scope guard's feature output (export/features.py) leaves the logit byte for byte."""

from __future__ import annotations

import numpy as np

from edgexray.edge_runtime.interpreter import interpreter_class


def test_feature_output_keeps_the_logit_bytes(tiny_tflite, tmp_path):
    from edgexray.export.features import with_feature_output

    source = tiny_tflite["int8"]
    folder = tmp_path / "with features"
    folder.mkdir()
    target = folder / "int8.tflite"
    target.write_bytes(with_feature_output(source.read_bytes()))
    before = interpreter_class()(model_path=str(source))
    after = interpreter_class()(model_path=str(target))
    rng = np.random.default_rng(3)
    for interpreter in (before, after):
        interpreter.allocate_tensors()
    assert len(after.get_output_details()) == 2
    for _ in range(20):
        batch = rng.integers(0, 256, before.get_input_details()[0]["shape"], dtype=np.uint8)
        outputs = []
        for interpreter in (before, after):
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
        assert outputs[0].tobytes() == outputs[1].tobytes()
