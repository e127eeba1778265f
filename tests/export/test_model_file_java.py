"""The android bundle's EdgexrayModelFile.java, compiled and run here: it reads the threshold,
the labels and the sidecar out of a model file as infer.py does, and refuses what infer.py
refuses."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from sidecar_support import put_sidecar, sidecar_inside

from edgexray.edge_runtime import REFERENCE_MODEL, metadata
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.export import bundle

DRIVER = Path(__file__).parent / "java" / "ModelFileRead.java"


@pytest.fixture(scope="module")
def read_in_java(tmp_path_factory):
    """A function running EdgexrayModelFile.read on model files in one JVM: a dict per
    model (or {"error": message})."""
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK (javac/java) on this machine")
    classes = tmp_path_factory.mktemp("java") / "classes"
    sources = [bundle.ANDROID_MODEL_FILE, bundle.ANDROID_SCOPE, DRIVER]
    subprocess.run(
        ["javac", "-J-Xmx512m", "--release", "8", "-d", str(classes), *map(str, sources)],
        check=True,
        capture_output=True,
        timeout=120,
    )

    def run(models: list[Path]) -> list[dict]:
        result = subprocess.run(
            ["java", "-Xmx256m", "-cp", str(classes), "ModelFileRead", *map(str, models)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = result.stdout.splitlines()
        assert len(lines) == len(models), result.stdout + result.stderr
        return [
            {"error": line[len("error: ") :]}
            if line.startswith("error: ")
            else dict(field.split("=", 1) for field in line.split("\t"))
            for line in lines
        ]

    return run


def test_java_reads_what_infer_py_reads(read_in_java, tiny_tflite, tmp_path):
    # Copies: the driver writes the sidecar it read beside each model.
    sources = [REFERENCE_MODEL, tiny_tflite["int8"], tiny_tflite["float32"]]
    models = [Path(shutil.copyfile(m, tmp_path / m.name)) for m in sources]
    for model, found in zip(models, read_in_java(models), strict=True):
        sidecar = load_sidecar(model)
        assert float(found["threshold"]) == sidecar["threshold"]
        assert found["labels"] == ",".join(sidecar["labels"])
        assert found["kind"] == sidecar["output"]["kind"]
        assert found["sha256"] == sidecar["sha256"] == metadata.identity(model)
        assert Path(found["sidecar"]).read_bytes() == metadata.read(model).sidecar_bytes
        scope = sidecar.get("scope")
        expected = (
            "none"
            if scope is None
            else f"{scope['feature_output']['index']},{scope['feature_output']['size']},"
            f"{scope['cutoff']!r}"
        )
        assert found["scope"] == expected


def _zip_after(flatbuffer: bytes, files: dict, compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO(flatbuffer)
    buffer.seek(0, 2)
    with zipfile.ZipFile(buffer, "a") as archive:
        for name, content in files.items():
            archive.writestr(name, content, compress_type=compression)
    return buffer.getvalue()


def test_java_refuses_what_infer_py_refuses(read_in_java, tiny_tflite, tmp_path):
    source = tiny_tflite["int8"]
    data = source.read_bytes()
    parts = metadata.read(source)
    flatbuffer, text = data[: parts.flatbuffer_size], parts.sidecar_bytes
    changed = bytearray(data)
    changed[parts.flatbuffer_size // 2] ^= 1
    models = {
        "carries no associated files": flatbuffer,
        "sha256 differs": bytes(changed),
        "is compressed": _zip_after(flatbuffer, {"edgexray.json": text}, zipfile.ZIP_DEFLATED),
        "does not name PNEUMONIA": _zip_after(
            flatbuffer, {"labels.txt": b"NORMAL\n", "edgexray.json": text}
        ),
        "threshold must be in [0, 1]": None,
        "carries no edgexray.json": _zip_after(flatbuffer, {"labels.txt": b"PNEUMONIA\n"}),
    }
    paths = []
    for index, content in enumerate(models.values()):
        path = tmp_path / f"{index}.tflite"
        if content is None:
            shutil.copyfile(source, path)
            put_sidecar(path, {**sidecar_inside(source), "threshold": 1.5}, copy=False)
        else:
            path.write_bytes(content)
        paths.append(path)
    for (message, _), found, path in zip(models.items(), read_in_java(paths), paths, strict=True):
        assert message in found.get("error", ""), (message, found)
        with pytest.raises(Exception):  # noqa: B017 infer.py refuses it too, whatever the words
            load_sidecar(path)


def test_java_reads_a_zip_whose_offsets_count_from_the_zip(read_in_java, tiny_tflite, tmp_path):
    # Another writer may concatenate a standalone zip: offsets from the zip's own start.
    source = tiny_tflite["int8"]
    parts = metadata.read(source)
    standalone = io.BytesIO()
    with zipfile.ZipFile(standalone, "w") as archive:
        for name, content in parts.files.items():
            archive.writestr(name, content)
    model = tmp_path / "concatenated.tflite"
    model.write_bytes(source.read_bytes()[: parts.flatbuffer_size] + standalone.getvalue())
    (found,) = read_in_java([model])
    assert found["sha256"] == load_sidecar(model)["sha256"]
    assert (
        hashlib.sha256(model.read_bytes()[: parts.flatbuffer_size]).hexdigest() == found["sha256"]
    )
    assert (
        json.loads(Path(found["sidecar"]).read_text())["threshold"]
        == load_sidecar(model)["threshold"]
    )
