"""A model file carries its sidecar inside (edge_runtime/metadata.py): a lone .tflite runs, a
readable copy beside it that disagrees is refused naming the fields, and the model's identity
(the sha256 of its flatbuffer) survives rewriting the sidecar."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
from edge_support import one_error_line, run_blocked
from sidecar_support import sidecar_inside
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime import metadata
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.sidecar import differences, load_sidecar
from edgexray.export.bundle import write_runtime

runner = CliRunner()


def lone_copy(model: Path, folder: Path) -> Path:
    """The .tflite alone in a folder, without its .json."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(model, folder / model.name))


def test_an_exported_model_carries_its_sidecar_and_the_json_is_a_copy(tiny_tflite):
    for model in tiny_tflite.values():
        parts = metadata.read(model)
        assert set(parts.files) == {metadata.LABELS_FILE, metadata.SIDECAR_FILE}
        assert sidecar_inside(model) == json.loads(model.with_suffix(".json").read_text())
        assert parts.files[metadata.LABELS_FILE] == b"PNEUMONIA\n"


def test_a_lone_tflite_runs_everywhere_a_model_is_taken(tiny_tflite, tmp_path, film):
    model = lone_copy(tiny_tflite["int8"], tmp_path / "lone model")
    assert load_sidecar(model) == sidecar_inside(tiny_tflite["int8"])
    record = Classifier(model).classify(film)
    assert record["probability"] == Classifier(tiny_tflite["int8"]).classify(film)["probability"]
    result = runner.invoke(app, ["predict", "--model", str(model.parent), str(film)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["probability"] == record["probability"]


def test_the_device_reads_a_lone_model_without_flatbuffers(tiny_tflite, tmp_path, film):
    device = tmp_path / "device"
    write_runtime(device)
    model = lone_copy(tiny_tflite["int8"], device)
    result = run_blocked(
        [sys.executable, str(device / "infer.py"), "--model", str(model), str(film)],
        tmp_path,
        also_block=("flatbuffers",),
    )
    assert result.returncode in (0, 4), result.stderr  # 4: the film is out of scope
    assert json.loads(result.stdout)["threshold"] == load_sidecar(model)["threshold"]


@pytest.mark.parametrize(
    "edit, named",
    [
        ({"threshold": 0.9}, "threshold"),
        ({"labels": ["PNEUMONIA", "NORMAL"]}, "labels"),
        ({"output": {"kind": "probability"}}, "output.kind"),
        ({"calibration": {"threshold": 0.9}}, "calibration"),
    ],
)
def test_a_json_beside_that_disagrees_is_refused_naming_the_fields(
    tiny_tflite, tmp_path, film, edit, named
):
    model = lone_copy(tiny_tflite["int8"], tmp_path / "stale copy")
    copy = sidecar_inside(model)
    for key, value in edit.items():
        copy[key] = {**copy[key], **value} if isinstance(copy.get(key), dict) else value
    model.with_suffix(".json").write_text(json.dumps(copy))
    with pytest.raises(InferenceError, match=f"disagrees with the sidecar inside .*{named}"):
        load_sidecar(model)
    result = runner.invoke(app, ["predict", "--model", str(model), str(film)])
    assert result.exit_code == 2 and result.stdout == ""
    assert named in one_error_line(result.stderr) and "disagrees" in result.stderr


def test_a_json_beside_that_is_not_a_sidecar_is_refused(tiny_tflite, tmp_path):
    model = lone_copy(tiny_tflite["int8"], tmp_path / "broken copy")
    model.with_suffix(".json").write_text("{not json")
    with pytest.raises(InferenceError, match="not valid JSON"):
        load_sidecar(model)
    model.with_suffix(".json").write_text('{"mine": true}')
    with pytest.raises(InferenceError, match=r"disagrees .*\(schema, .* and 8 more\)"):
        load_sidecar(model)


def test_differences_name_nested_fields_and_extras():
    ours = {"threshold": 0.2, "input": {"height": 128, "width": 128}, "scope": None}
    theirs = {"threshold": 0.2, "input": {"height": 64, "width": 128}, "note": 1}
    assert differences(ours, theirs) == ["input.height", "scope", "note"]
    assert differences(ours, dict(ours)) == []


def test_the_identity_is_the_flatbuffers_sha256(tiny_tflite):
    model = tiny_tflite["int8"]
    data = model.read_bytes()
    parts = metadata.read(model)
    assert parts.sha256 == hashlib.sha256(data[: parts.flatbuffer_size]).hexdigest()
    assert parts.sha256 == load_sidecar(model)["sha256"] == metadata.identity(model)
    assert parts.sha256 != hashlib.sha256(data).hexdigest()  # the file's own sha256


def test_rewriting_the_sidecar_keeps_every_byte_of_the_flatbuffer(tiny_tflite, tmp_path):
    model = lone_copy(tiny_tflite["int8"], tmp_path / "rewritten")
    before = model.read_bytes()
    sidecar = {**load_sidecar(model), "threshold": 0.75, "note": "x" * 1000}
    after = metadata.with_sidecar(before, sidecar)
    size = metadata.parse(before).flatbuffer_size
    assert after[:size] == before[:size] and after != before
    model.write_bytes(after)
    assert load_sidecar(model)["threshold"] == 0.75
    assert metadata.identity(model) == sidecar["sha256"]
    with pytest.raises(InferenceError, match="sha256 is not this model's"):
        metadata.with_sidecar(before, {**sidecar, "sha256": "0" * 64})


def test_the_associated_files_are_written_the_same_way_every_time(tiny_tflite):
    data = tiny_tflite["int8"].read_bytes()
    sidecar = sidecar_inside(tiny_tflite["int8"])
    assert metadata.with_sidecar(data, sidecar) == metadata.with_sidecar(data, sidecar) == data


def test_a_model_whose_graph_changed_is_refused(tiny_tflite, tmp_path):
    model = lone_copy(tiny_tflite["int8"], tmp_path / "changed graph")
    data = bytearray(model.read_bytes())
    data[metadata.read(model).flatbuffer_size // 2] ^= 0x01
    model.write_bytes(bytes(data))
    with pytest.raises(InferenceError, match="sha256 differs"):
        load_sidecar(model)


def test_a_model_from_before_models_carried_metadata_still_runs_with_its_json(
    tiny_tflite, tmp_path, film
):
    source = tiny_tflite["int8"]
    folder = tmp_path / "old model"
    folder.mkdir()
    bare = source.read_bytes()[: metadata.read(source).flatbuffer_size]
    model = folder / "old.tflite"
    model.write_bytes(bare)  # a bare flatbuffer: its identity is the file's sha256
    with pytest.raises(InferenceError, match="carries no edgexray metadata and has no sidecar"):
        load_sidecar(model)
    sidecar = {**sidecar_inside(source), "sha256": hashlib.sha256(bare).hexdigest()}
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    assert Classifier(model).classify(film)["probability"] == pytest.approx(
        Classifier(source).classify(film)["probability"], abs=0
    )


def _zip_with(data: bytes, files: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    parts = metadata.parse(data)
    buffer = io.BytesIO(data[: parts.flatbuffer_size])
    buffer.seek(0, 2)
    with zipfile.ZipFile(buffer, "a") as archive:
        for name, content in files.items():
            archive.writestr(name, content, compress_type=compression)
    return buffer.getvalue()


def _with_duplicate(data: bytes, name: str, content: bytes) -> bytes:
    buffer = io.BytesIO(data)
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(buffer, "a") as archive:
            archive.writestr(name, content)
    return buffer.getvalue()


def test_damaged_associated_files_are_refused_in_one_line(tiny_tflite, tmp_path, film):
    data = tiny_tflite["int8"].read_bytes()
    text = metadata.read(tiny_tflite["int8"]).sidecar_bytes
    cases = {
        "is compressed": _zip_with(data, {"edgexray.json": text}, zipfile.ZIP_DEFLATED),
        "appears twice": _with_duplicate(data, "edgexray.json", text),
        "does not name PNEUMONIA": _zip_with(data, {"edgexray.json": text, "labels.txt": b"X\n"}),
        "not valid JSON": _zip_with(data, {"edgexray.json": b"{"}),
        "bytes after its associated files": data + b"\0",
    }
    for message, broken in cases.items():
        model = tmp_path / f"{message}.tflite"
        model.write_bytes(broken)
        with pytest.raises(InferenceError, match=message):
            load_sidecar(model)
        result = runner.invoke(app, ["predict", "--model", str(model), str(film)])
        assert result.exit_code == 2 and message in one_error_line(result.stderr)
