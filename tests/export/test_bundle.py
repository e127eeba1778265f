"""Bundles unzipped into a path with spaces and used exactly as their README says."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_TRAIN, synthetic_xray
from dicom_support import write_film
from edge_support import blocked_env, make_venv, one_error_line, run_blocked
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime import scope as guard
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.interpreter import input_batch
from edgexray.edge_runtime.preprocess import preprocess
from edgexray.edge_runtime.sidecar import sha256_of
from edgexray.errors import EdgexrayError
from edgexray.export import bundle as bundle_module
from edgexray.export.bundle import BundleConfig, make_bundle, non_builtin_ops


def unzip(archive: Path, into: Path) -> Path:
    """Extract like `unzip` and return the bundle folder (the zip's only top-level entry)."""
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(into)
        (top,) = {name.split("/")[0] for name in zipped.namelist()}
    return into / top


def assert_checksums_pass(folder: Path) -> None:
    listed = {line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines()}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert listed == present - {"SHA256SUMS"}
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=folder, check=True)


def readme_line(readme: str, start: str) -> str:
    (line,) = [line for line in readme.splitlines() if line.startswith(start)]
    return line


def films(folder: Path, rng) -> list[Path]:
    """Two real films when ../shared is there, a synthetic one, the same as a DICOM file
    without a suffix (MONOCHROME1, as X-ray units write it), and a text file named .jpeg."""
    folder.mkdir(parents=True)
    paths = []
    if SHARED_TRAIN.is_dir():
        for label in ("NORMAL", "PNEUMONIA"):
            source = sorted((SHARED_TRAIN / label).iterdir())[0]
            paths.append(Path(shutil.copyfile(source, folder / f"{label} {source.name}")))
    synthetic = synthetic_xray(rng, pneumonia=True)
    synthetic.save(folder / "synthetic.png")
    write_film(folder / "IM000001", np.asarray(synthetic), bits=12, monochrome1=True)
    (folder / "scan notes.jpeg").write_text("not a film\n")
    return sorted(paths + [folder / p for p in ("synthetic.png", "IM000001", "scan notes.jpeg")])


def test_rpi_bundle_runs_as_its_readme_says(tiny_tflite, tmp_path):
    config = BundleConfig(str(tiny_tflite["int8"]), "rpi", str(tmp_path / "built" / "rpi b"), True)
    result = make_bundle(config)
    home = tmp_path / "pi home"
    # Step 1: copy the zip, `unzip <name>.zip && mv <name> edgexray`.
    device = unzip(result["zip"], home).rename(home / "edgexray")
    readme = (device / "README.md").read_text()
    assert_checksums_pass(device)  # step 2
    assert "python3 -m venv .venv" in readme
    assert ".venv/bin/pip install --only-binary=:all: -r requirements.txt" in readme
    requirements = (device / "requirements.txt").read_text()
    assert all(name in requirements for name in ("ai-edge-litert==", "numpy", "pillow"))
    assert "pydicom>=" in (device / "requirements-dicom.txt").read_text()
    assert ".venv/bin/pip install --only-binary=:all: -r requirements-dicom.txt" in readme
    make_venv(device)  # step 3
    check = run_blocked(
        ["bash", "-c", readme_line(readme, ".venv/bin/python check/")], tmp_path, cwd=device
    )
    assert (check.returncode, check.stdout.split(":")[0]) == (0, "check passed"), check.stderr
    wrong = bytearray((device / "check" / "input.u8").read_bytes())
    wrong[7] ^= 1
    (device / "check" / "input.u8").write_bytes(bytes(wrong))
    check = run_blocked([".venv/bin/python", "check/check.py"], tmp_path, cwd=device)
    assert check.returncode == 1 and "1 of" in check.stdout, check.stdout + check.stderr
    images = films(home / "xrays", np.random.default_rng(0))

    command = readme_line(readme, ".venv/bin/python infer.py")  # step 4, verbatim
    run = run_blocked(["bash", "-c", command], tmp_path, cwd=device, env={"HOME": str(home)})
    assert run.returncode == 3, run.stderr  # the text file is reported, the others classified
    records = [json.loads(line) for line in (device / "results.jsonl").read_text().splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in images]
    classifier = Classifier(tiny_tflite["int8"])
    for record, image in zip(records, images, strict=True):
        if image.name == "scan notes.jpeg":
            assert set(record) == {"path", "error"}
        else:
            assert record["probability"] == pytest.approx(classifier.probability(image), abs=1e-6)
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["IM000001"]["probability"] == by_name["synthetic.png"]["probability"]
    assert by_name["IM000001"]["rendering"].endswith("MONOCHROME1 inverted")

    # Step 5: one pass of the watch-folder service, with the unit's own arguments.
    inbox = home / "xray-inbox"
    for image in films(inbox, np.random.default_rng(1)):
        os.utime(image, (time.time() - 60, time.time() - 60))  # copied a minute ago
    (inbox / "readme.txt").write_text("not an image: stays\n")
    unit = (device / "edgexray-watch@.service").read_text().replace("\\\n", " ")
    exec_start = readme_line(unit, "ExecStart=").removeprefix("ExecStart=")
    args = [arg.replace("/home/%i", str(home)) for arg in exec_start.split()]
    watch = run_blocked(args, tmp_path, env={"ONCE": "1", "HOME": str(home)})
    assert watch.returncode == 0, watch.stderr
    assert sorted(p.name for p in inbox.iterdir()) == [".processing", "readme.txt"]
    assert list((inbox / ".processing").iterdir()) == []  # every batch went on to done/
    (batch,) = (home / "xray-done").iterdir()
    results = (home / "xray-results.jsonl").read_text().splitlines()
    assert len(results) == len(list(batch.iterdir())) == len(images)


def test_android_bundle_follows_its_readme(tiny_tflite, tmp_path):
    config = BundleConfig(str(tiny_tflite["int8"]), "android", str(tmp_path / "android b"), True)
    device = unzip(make_bundle(config)["zip"], tmp_path / "phone project" / "assets dir")
    assert_checksums_pass(device)
    readme = (device / "README.md").read_text()
    assert 'implementation("com.google.ai.edge.litert:litert:' in readme
    sidecar = json.loads((device / "int8.json").read_text())
    labels = (device / "labels.txt").read_text().split()
    assert labels == sidecar["labels"] == ["NORMAL", "PNEUMONIA"]

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(device / "int8.tflite"))
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    height, width = sidecar["input"]["height"], sidecar["input"]["width"]

    expected = json.loads((device / "check" / "expected.json").read_text())
    # Step 3 calls the shipped Java class (compiled and compared in test_android_preprocess).
    assert "EdgexrayPreprocess.modelInput(" in readme
    assert (device / "EdgexrayPreprocess.java").is_file()
    port = (device / "check" / "input.u8").read_bytes()
    image = preprocess(device / "check" / "image.png", sidecar["input"])
    assert port == input_batch(image, input_detail).tobytes()

    interpreter.set_tensor(
        input_detail["index"], np.frombuffer(port, np.uint8).reshape(1, height, width, 1)
    )  # noqa: E501
    interpreter.invoke()
    q = int(interpreter.get_tensor(output_detail["index"]).reshape(-1)[0])
    out_scale, out_zero = output_detail["quantization"]
    output = (q - out_zero) * out_scale
    # The README's step 4: the sigmoid of the dequantized logit (output kind "logit").
    assert sidecar["output"]["kind"] == "logit"
    probability = 1.0 / (1.0 + math.exp(-output))
    assert q == expected["output_uint8"] and probability == pytest.approx(expected["probability"])
    assert labels[int(probability >= sidecar["threshold"])] == expected["label"]
    classifier = Classifier(tiny_tflite["int8"])
    assert expected["probability"] == classifier.probability(device / "check" / "image.png")


@pytest.fixture(scope="module")
def foreign_op_models(tiny_tflite, tmp_path_factory) -> dict[str, Path]:
    """Models with a custom op and a Flex (select TensorFlow) op, with matching sidecars."""
    from edgexray.compat import tf

    folder = tmp_path_factory.mktemp("foreign ops")
    sidecar = json.loads(tiny_tflite["int8"].with_suffix(".json").read_text())
    graphs = {
        "custom": (lambda x: tf.reshape(tf.reduce_mean(tf.math.bessel_i0e(x)), [1, 1]), False),
        "flex": (lambda x: tf.reshape(tf.linalg.det(tf.reshape(x, [4, 4])), [1, 1]), True),
    }
    models = {}
    for name, (graph, flex) in graphs.items():
        function = tf.function(graph, input_signature=[tf.TensorSpec([1, 4, 4, 1], tf.float32)])
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [function.get_concrete_function()], function
        )
        if flex:
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            converter.target_spec.supported_ops = ops
        else:
            converter.allow_custom_ops = True
        path = folder / f"{name}.tflite"
        path.write_bytes(converter.convert())
        path.with_suffix(".json").write_text(
            json.dumps({**sidecar, "model_file": path.name, "sha256": sha256_of(path)})
        )
        models[name] = path
    return models


def test_non_builtin_ops_are_found_in_the_flatbuffer(foreign_op_models, tiny_tflite):
    assert non_builtin_ops(foreign_op_models["custom"]) == ["BesselI0e"]
    assert non_builtin_ops(foreign_op_models["flex"]) == ["FlexMatrixDeterminant"]
    assert non_builtin_ops(tiny_tflite["int8"]) == non_builtin_ops(tiny_tflite["float32"]) == []


@pytest.mark.parametrize("target", ["rpi", "android"])
def test_bundle_refuses_operators_the_device_cannot_run(foreign_op_models, tmp_path, target):
    for name, op in (("custom", "BesselI0e"), ("flex", "FlexMatrixDeterminant")):
        with pytest.raises(EdgexrayError, match=f"not LiteRT builtins.*{op}"):
            make_bundle(BundleConfig(str(foreign_op_models[name]), target, str(tmp_path / name)))
        assert not (tmp_path / name).exists()


def test_android_bundle_refuses_a_float_model(tiny_tflite, tmp_path):
    config = BundleConfig(str(tiny_tflite["float32"]), "android", str(tmp_path / "a"))
    with pytest.raises(EdgexrayError, match="float32 input and float32 output"):
        make_bundle(config)
    assert list(tmp_path.iterdir()) == []


def test_bundle_replaces_an_earlier_bundle_but_never_another_folder(tiny_tflite, tmp_path):
    out = tmp_path / "rpi bundle"
    make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(out)))
    (out / "infer.py").write_text("an edited copy of a bundle file")
    (out / "edge_runtime" / "dicom.py").write_text("an edited module")
    result = make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(out)))
    assert (out / "infer.py").read_text() == bundle_module.template("infer-launcher.py")
    for module in bundle_module.runtime_modules():
        shipped = out / "edge_runtime" / module.relative_to(bundle_module.RUNTIME_SOURCE)
        assert shipped.read_bytes() == module.read_bytes()
    assert result["kept"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rpi bundle"]  # no temporaries left
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "letter.txt").write_text("keep me")
    with pytest.raises(EdgexrayError, match="not an edgexray bundle"):
        make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(documents)))
    assert (documents / "letter.txt").read_text() == "keep me"


def test_failed_bundle_leaves_the_earlier_one_whole(tiny_tflite, tmp_path, monkeypatch):
    out = tmp_path / "android"
    make_bundle(BundleConfig(str(tiny_tflite["int8"]), "android", str(out)))
    before = (out / "SHA256SUMS").read_text()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_module, "_write_checksums", disk_full)
    with pytest.raises(EdgexrayError) as failure:
        make_bundle(BundleConfig(str(tiny_tflite["int8"]), "android", str(out)))
    # The message names the folder the user asked for, not the hidden staging folder.
    assert str(failure.value) == f"cannot write the bundle {out}: No space left on device"
    assert (out / "SHA256SUMS").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["android"]


runner = CliRunner()


def test_bundle_command_writes_folder_and_zip(tiny_tflite, tmp_path):
    out = tmp_path / "pi bundle"
    result = runner.invoke(
        app,
        [
            "bundle",
            "--model",
            str(tiny_tflite["int8"]),
            "--target",
            "rpi",
            "--out",
            str(out),
            "--zip",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "infer.py").is_file() and out.with_name("pi bundle.zip").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.tflite", "--target", "rpi"], "model not found"),
        (["FLOAT", "--target", "android"], "uint8"),
        (["INT8", "--target", "ios"], "is not one of 'rpi', 'android'"),
    ],
)
def test_bundle_command_with_bad_input_exits_2_with_one_line(tiny_tflite, tmp_path, args, message):
    args = [
        {"FLOAT": str(tiny_tflite["float32"]), "INT8": str(tiny_tflite["int8"])}.get(a, a)
        for a in args
    ]
    result = runner.invoke(app, ["bundle", "--model", *args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert message in one_error_line(result.output)
    assert not (tmp_path / "b").exists()


def test_blocked_env_is_what_the_bundle_tests_use(tmp_path):
    # The README runs above would pass vacuously if the blocker did nothing.
    result = subprocess.run(
        [sys.executable, "-c", "import edgexray"], env=blocked_env(tmp_path), capture_output=True
    )
    assert result.returncode != 0


def test_rebundling_keeps_the_users_files_and_says_so(tiny_tflite, tmp_path):
    out = tmp_path / "my bundle"
    make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(out)))
    (out / "results.jsonl").write_text('{"path": "a.jpeg"}\n')
    (out / ".venv" / "bin").mkdir(parents=True)
    (out / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    args = ["bundle", "--model", str(tiny_tflite["int8"]), "--target", "android", "--out", str(out)]
    result = runner.invoke(app, [*args, "--zip"])
    assert result.exit_code == 0, result.output
    assert "kept your files: .venv, results.jsonl" in result.output
    assert (out / "results.jsonl").read_text() == '{"path": "a.jpeg"}\n'
    assert (out / ".venv" / "pyvenv.cfg").is_file()
    assert (out / "labels.txt").is_file() and not (out / "infer.py").exists()  # rpi's went
    listed = {line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()}
    with zipfile.ZipFile(out.with_name("my bundle.zip")) as archive:
        zipped = {name.split("/", 1)[1] for name in archive.namelist()}
    assert zipped == listed | {"SHA256SUMS"} and "results.jsonl" not in listed
    subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out, check=True)

    (out / "labels.txt").unlink()
    make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(out)))
    (out / "labels.txt").write_text("my own list\n")  # the user's: android would replace it
    with pytest.raises(EdgexrayError, match="holds your labels.txt"):
        make_bundle(BundleConfig(str(tiny_tflite["int8"]), "android", str(out)))
    assert (out / "labels.txt").read_text() == "my own list\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my bundle", "my bundle.zip"]


def test_an_empty_folder_can_receive_a_bundle(tiny_tflite, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(out)))["kept"] == []
    assert (out / "infer.py").is_file()


def test_bundle_into_the_current_folder_exits_2(tiny_tflite, tmp_path, monkeypatch):
    out = tmp_path / "rpi"
    make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(out)))
    (out / "results.jsonl").write_text("mine\n")
    monkeypatch.chdir(out)
    for target in (".", str(out), ".."):
        result = runner.invoke(
            app, ["bundle", "--model", "int8.tflite", "--target", "rpi", "--out", target]
        )
        assert result.exit_code == 2, result.output
        assert "is the current folder or holds it" in one_error_line(result.output)
    assert (out / "results.jsonl").read_text() == "mine\n"


@pytest.mark.parametrize("target", ["rpi", "android"])
def test_every_bundle_holds_a_model_card(tiny_tflite, tmp_path, target):
    from edgexray.edge_runtime import REFERENCE_MODEL
    from edgexray.export.bundle import BundleConfig, make_bundle

    shipped = make_bundle(BundleConfig(str(REFERENCE_MODEL), target, str(tmp_path / "shipped")))
    card = Path(shipped["path"]) / "MODEL_CARD.md"
    assert card.read_bytes() == (REFERENCE_MODEL.parent / "MODEL_CARD.md").read_bytes()
    run = make_bundle(BundleConfig(str(tiny_tflite["int8"]), target, str(tmp_path / "run")))
    written = (Path(run["path"]) / "MODEL_CARD.md").read_text()
    assert "{{" not in written and "int8.tflite" in written
    assert "Not** a diagnostic device" in written and "OUT_OF_SCOPE" in written
    assert "no scope statistics" in written  # the tiny model has none
    # The shipped model without its own card: the card says which changes its guard checks.
    alone = tmp_path / "shipped model alone" / "model.tflite"
    alone.parent.mkdir()
    shutil.copy(REFERENCE_MODEL, alone)
    made = make_bundle(BundleConfig(str(alone), target, str(tmp_path / "alone")))
    card = (Path(made["path"]) / "MODEL_CARD.md").read_text()
    looks = [guard.TURN_NAMES[t].looks for t in Classifier(alone).scope["orientation"]["turns"]]
    assert looks and f"refused when it looks {'; '.join(looks)}." in card
    assert "MODEL_CARD.md" in (Path(run["path"]) / "SHA256SUMS").read_text()
