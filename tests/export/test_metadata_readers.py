"""The metadata inside edgexray's models reads back in LiteRT's own metadata tooling, which
nobody here wrote: tflite-support's MetadataDisplayer (and MetadataPopulator's checks), in a
venv of its own because tflite-support pins protobuf 3.

The venv is made once under the temporary folder (or give a Python that has tflite-support
as EDGEXRAY_TFLITE_SUPPORT_PYTHON); the test is skipped, saying why, only when pip cannot
install tflite-support here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edgexray.edge_runtime import REFERENCE_MODEL, metadata
from edgexray.edge_runtime.sidecar import load_sidecar

pytestmark = pytest.mark.slow  # installs tflite-support (about a minute) the first time

VENV = Path(tempfile.gettempdir()) / "edgexray-tflite-support-venv"

READ = """
import json, sys
from tflite_support import metadata
from tensorflow_lite_support.metadata.cc.python import _pywrap_metadata_version

found = []
for path in sys.argv[1:]:
    displayer = metadata.MetadataDisplayer.with_model_file(path)
    buffer = bytes(displayer.get_metadata_buffer())
    # The populator's own checks: one subgraph, as many tensor metadata as tensors.
    with open(path, "rb") as handle:
        populator = metadata.MetadataPopulator.with_model_buffer(handle.read())
    populator.load_metadata_buffer(buffer)
    found.append({
        "metadata": json.loads(displayer.get_metadata_json()),
        "files": displayer.get_packed_associated_file_list(),
        "labels": displayer.get_associated_file_buffer("labels.txt").decode(),
        "sidecar": json.loads(displayer.get_associated_file_buffer("edgexray.json")),
        "min_parser_version": _pywrap_metadata_version.GetMinimumMetadataParserVersion(buffer),
    })
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def tflite_support_python() -> str:
    given = os.environ.get("EDGEXRAY_TFLITE_SUPPORT_PYTHON")
    if given:
        return given
    python = VENV / "bin" / "python"
    probe = [str(python), "-c", "from tflite_support import metadata"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "tflite-support"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    imported = subprocess.run(probe, capture_output=True, text=True)
    if install.returncode != 0 or imported.returncode != 0:
        said = install.stderr if install.returncode != 0 else imported.stderr
        pytest.skip(f"tflite-support cannot be installed here ({said.strip().splitlines()[-1]})")
    return str(python)


def test_litert_metadata_tools_read_the_labels_normalisation_and_sidecar(
    tflite_support_python, tiny_tflite
):
    models = [REFERENCE_MODEL, tiny_tflite["int8"], tiny_tflite["float32"]]
    result = subprocess.run(
        [tflite_support_python, "-c", READ, *map(str, models)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    for model, found in zip(models, json.loads(result.stdout), strict=True):
        sidecar = load_sidecar(model)
        assert found["files"] == [metadata.LABELS_FILE, metadata.SIDECAR_FILE]
        assert found["labels"] == f"{sidecar['labels'][1]}\n"
        assert found["sidecar"] == sidecar
        written = found["metadata"]
        assert found["min_parser_version"] == written["min_parser_version"] == "1.0.0"
        assert written["name"].startswith("edgexray pneumonia classifier")
        (subgraph,) = written["subgraph_metadata"]
        (image,) = subgraph["input_tensor_metadata"]
        assert image["content"]["content_properties"] == {"color_space": "GRAYSCALE"}
        (unit,) = image["process_units"]
        assert unit["options_type"] == "NormalizationOptions"
        assert unit["options"] == {"mean": [0.0], "std": [255.0]}
        score = subgraph["output_tensor_metadata"][0]
        assert score["associated_files"] == [
            {
                "name": "labels.txt",
                "description": "The class the output value speaks of.",
                "type": "TENSOR_AXIS_LABELS",
            }
        ]
        assert written["associated_files"][0]["name"] == "edgexray.json"
