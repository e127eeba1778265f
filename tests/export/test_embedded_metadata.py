"""The standard TFLite metadata edgexray writes into every model (export/metadata.py): what
it says, that the graph is untouched, and that writing it again replaces it in place."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sidecar_support import sidecar_inside

from edgexray.edge_runtime import metadata as device_metadata
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.interpreter import interpreter_class
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.export import bundle, metadata
from edgexray.export import metadata_schema_py_generated as schema
from edgexray.export.bundle import BundleConfig, make_bundle

VENDORED = Path(metadata.__file__).parent / "metadata_schema_py_generated.py"


def test_the_vendored_schema_code_is_tflite_supports_unchanged():
    text = VENDORED.read_text()
    recorded = text.split("sha256 of\n# that file: ")[1][:64]
    body = text.split("permissions and limitations under the License.\n\n", 1)[1]
    assert hashlib.sha256(body.encode()).hexdigest() == recorded


def test_every_export_carries_the_standard_metadata(tiny_tflite):
    for name, model in tiny_tflite.items():
        sidecar = load_sidecar(model)
        found = metadata.read_model_metadata(model.read_bytes())
        assert found["name"] == f"edgexray pneumonia classifier ({name})"
        assert found["author"] == "edgexray" and "Apache-2.0" in found["license"]
        assert found["minParserVersion"] == metadata.MIN_PARSER_VERSION
        assert found["associatedFiles"][0]["name"] == "edgexray.json"
        assert found["associatedFiles"][0]["type"] == schema.AssociatedFileType.DESCRIPTIONS
        (subgraph,) = found["subgraphMetadata"]
        (image,) = subgraph["inputTensorMetadata"]
        assert image["content"]["contentProperties"]["colorSpace"] == (
            schema.ColorSpaceType.GRAYSCALE
        )
        assert image["processUnits"][0]["options"] == {"mean": [0.0], "std": [255.0]}
        pixels = [0.0, 255.0] if sidecar["input"]["dtype"] == "uint8" else [0.0, 1.0]
        assert [image["stats"]["min"][0], image["stats"]["max"][0]] == pixels
        score = subgraph["outputTensorMetadata"][0]
        assert score["name"] == f"pneumonia_{sidecar['output']['kind']}"
        assert score["associatedFiles"][0]["name"] == "labels.txt"
        assert score["associatedFiles"][0]["type"] == schema.AssociatedFileType.TENSOR_AXIS_LABELS
        outputs = len(Classifier(model).outputs)
        assert len(subgraph["outputTensorMetadata"]) == outputs


def test_the_metadata_leaves_the_graph_untouched(tiny_run, tiny_tflite):
    from ai_edge_litert import schema_py_generated as tfl

    from edgexray import artifacts
    from edgexray.export import convert

    converted = convert.to_float32(artifacts.load_keras(tiny_run / artifacts.MODEL))
    assert metadata.metadata_buffer(converted) is None  # the converter writes none
    embedded, _ = metadata.embed(converted, load_sidecar(tiny_tflite["float32"]))

    def graph(data: bytes):
        """Everything of the model but its TFLITE_METADATA entry and buffer."""
        parsed = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(data, 0))
        ours = [m.buffer for m in parsed.metadata if m.name == b"TFLITE_METADATA"]
        buffers = [
            None if b.data is None else bytes(b.data)
            for i, b in enumerate(parsed.buffers)
            if i not in ours
        ]
        subgraph = parsed.subgraphs[0]
        operators = [(o.opcodeIndex, list(o.inputs), list(o.outputs)) for o in subgraph.operators]
        tensors = [(t.name, list(t.shape), t.type, t.buffer) for t in subgraph.tensors]
        kept = [(m.name, m.buffer) for m in parsed.metadata if m.buffer not in ours]
        return buffers, operators, tensors, kept, list(subgraph.inputs), list(subgraph.outputs)

    assert graph(embedded) == graph(converted)
    rng = np.random.default_rng(0)
    interpreters = [interpreter_class()(model_content=data) for data in (converted, embedded)]
    for interpreter in interpreters:
        interpreter.allocate_tensors()
    shape = interpreters[0].get_input_details()[0]["shape"]
    for _ in range(5):
        batch = rng.random(size=shape, dtype=np.float32)
        outputs = []
        for interpreter in interpreters:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
            interpreter.invoke()
            details = interpreter.get_output_details()
            outputs.append([interpreter.get_tensor(o["index"]).tobytes() for o in details])
        assert outputs[0] == outputs[1]


def test_writing_the_metadata_again_replaces_it_in_place(tiny_tflite):
    model = tiny_tflite["int8"]
    data, sidecar = metadata.embed(model.read_bytes(), load_sidecar(model))
    assert (data, sidecar) == (model.read_bytes(), load_sidecar(model))  # deterministic
    from ai_edge_litert import schema_py_generated as tfl

    root = tfl.Model.GetRootAs(data, 0)
    names = [root.Metadata(i).Name() for i in range(root.MetadataLength())]
    assert names.count(b"TFLITE_METADATA") == 1


def test_a_bundle_carries_a_model_with_its_metadata(tiny_tflite, tmp_path):
    lone = tmp_path / "lone" / "int8.tflite"
    lone.parent.mkdir()
    shutil.copyfile(tiny_tflite["int8"], lone)
    out = Path(make_bundle(BundleConfig(str(lone), "android", str(tmp_path / "b")))["path"])
    assert (out / "int8.tflite").read_bytes() == lone.read_bytes()
    assert json.loads((out / "int8.json").read_text()) == sidecar_inside(lone)
    assert (out / bundle.ANDROID_MODEL_FILE.name).is_file()


def test_a_model_from_before_metadata_gets_it_in_its_bundle(tiny_run, tiny_tflite, tmp_path):
    from edgexray import artifacts
    from edgexray.export import convert

    source = tiny_tflite["float32"]
    bare = convert.to_float32(artifacts.load_keras(tiny_run / artifacts.MODEL))
    old = tmp_path / "old" / "float32.tflite"
    old.parent.mkdir()
    old.write_bytes(bare)
    sidecar = {**sidecar_inside(source), "sha256": hashlib.sha256(bare).hexdigest()}
    old.with_suffix(".json").write_text(json.dumps(sidecar))
    out = Path(make_bundle(BundleConfig(str(old), "rpi", str(tmp_path / "b")))["path"])
    bundled = out / "float32.tflite"
    assert device_metadata.read(bundled).sidecar_bytes is not None
    assert metadata.read_model_metadata(bundled.read_bytes())["name"].startswith("edgexray")
    manifest = json.loads((out / "bundle.json").read_text())
    assert manifest["model_sha256"] == load_sidecar(bundled)["sha256"] != sidecar["sha256"]
    expected = json.loads((out / "check" / "expected.json").read_text())
    assert expected["probability"] == Classifier(old).probability(out / "check" / "image.png")


@pytest.mark.parametrize("data", [b"", b"not a model at all", b"TFL3" * 10])
def test_embedding_into_something_that_is_no_model_is_one_error(tiny_tflite, data):
    from edgexray.errors import EdgexrayError

    with pytest.raises(EdgexrayError, match="not a TFLite model"):
        metadata.embed(data, load_sidecar(tiny_tflite["int8"]))
