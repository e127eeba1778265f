"""The interpreter (interpreter.py): bounded threads, and when grey levels are its input as is."""

from __future__ import annotations

import numpy as np
import pytest
from edge_support import one_error_line, predict, run, script

from edgexray.edge_runtime.interpreter import levels_are_input


@pytest.mark.parametrize("threads", ["0", "65", "100000"])
def test_thread_count_is_bounded(device, tiny_tflite, film, threads):
    model = tiny_tflite["int8"]
    for command in (script(device, "--model", model), predict("--model", model)):
        result = run(command + ["--threads", threads, str(film)])
        assert result.returncode == 2 and result.stdout == ""
        assert f"threads must be between 1 and 64, not {threads}" in one_error_line(result.stderr)


def test_only_uint8_inputs_of_scale_one_over_255_and_zero_point_0_take_grey_levels_as_is():
    def detail(dtype, scale, zero_point):
        return {"dtype": dtype, "quantization": (scale, zero_point)}

    assert levels_are_input(detail(np.uint8, 0.003921568859368563, 0))  # float32(1/255)
    assert not levels_are_input(detail(np.uint8, 0.0078125, 128))
    assert not levels_are_input(detail(np.uint8, 0.004, 0))  # rounds some levels apart
    assert not levels_are_input(detail(np.int8, 0.003921568859368563, -128))
    assert not levels_are_input(detail(np.float32, 0.0, 0))
