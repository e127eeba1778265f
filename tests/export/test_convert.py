"""Conversion (export/convert.py): a full-int8 sidecar holds the interpreter's quantization."""

import json


def test_int8_sidecar_reads_uint8_quantization_from_interpreter(tiny_tflite):
    sidecar = json.loads(tiny_tflite["int8"].with_suffix(".json").read_text())
    assert sidecar["input"]["dtype"] == "uint8"
    assert sidecar["output"]["dtype"] == "uint8"
    assert sidecar["input"]["quantization"]["scale"] > 0
