"""The standalone edge runtime run as on a device: a copied infer.py, no TensorFlow."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_TRAIN, synthetic_xray
from edge_support import attempted_imports, blocked_env, one_error_line, run_blocked
from PIL import Image
from sidecar_support import with_graph_changed
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime import cli as device_cli
from edgexray.edge_runtime import metadata
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.outputs.records import RECORD_FIELDS
from edgexray.edge_runtime.preprocess import preprocess
from edgexray.export.bundle import write_runtime

RECORD_KEYS = {
    "path",
    "probability",
    "label",
    "threshold",
    "latency_ms",
    "rendering",
    "in_scope",
    "scope_reason",
}
READABLE = [
    "16 bit.png",
    "UPPER CASE.PNG",
    "big 4000x3000.jpg",
    "exif rotated.jpg",
    "one pixel.png",
    "palette.png",
    "rgba.png",
]
UNREADABLE = [
    "bomb over our limit.png",
    "bomb over pillow error.png",
    "bomb over pillow warning.png",
    "not an image.jpeg",
    "truncated.jpeg",
]


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height but holds no pixels: a bomb costs nothing to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def exif_rotated_jpeg(path: Path, rng) -> None:
    """A non-square film stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    synthetic_xray(rng, pneumonia=True, size=(40, 64)).save(path, quality=95, exif=exif)


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("odd") / "odd images"
    folder.mkdir()
    rng = np.random.default_rng(7)
    film = synthetic_xray(rng, pneumonia=True)
    sixteen = np.asarray(film, dtype=np.uint16) * 200 + 1000  # uses 1000..52000 of 16 bits
    Image.fromarray(sixteen).save(folder / "16 bit.png")
    film.save(folder / "UPPER CASE.PNG")
    ramp = np.add.outer(np.arange(3000) // 12, np.arange(4000) // 16) % 256
    Image.fromarray(ramp.astype(np.uint8)).save(folder / "big 4000x3000.jpg", quality=80)
    exif_rotated_jpeg(folder / "exif rotated.jpg", rng)
    Image.new("L", (1, 1), 128).save(folder / "one pixel.png")
    film.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    rgba = film.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 48).astype(np.uint8), (40, 1))))
    rgba.save(folder / "rgba.png")
    png_header_only(folder / "bomb over our limit.png", 8000, 7000)  # 56 Mpx: ours refuses
    png_header_only(folder / "bomb over pillow warning.png", 10000, 10000)  # Pillow warns
    png_header_only(folder / "bomb over pillow error.png", 20000, 20000)  # Pillow raises
    (folder / "not an image.jpeg").write_text("a note, not a film\n")
    whole = io.BytesIO()
    film.save(whole, format="JPEG", quality=95)
    (folder / "truncated.jpeg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    (folder / "notes.txt").write_text("not walked: not an image suffix\n")
    film.save(folder / ".hidden.png")  # skipped: hidden files are not films
    return folder


def run_script(device: Path, tmp_path: Path, *args) -> subprocess.CompletedProcess:
    return run_blocked([sys.executable, str(device / "infer.py"), *map(str, args)], tmp_path)


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_blocker_refuses_tensorflow_and_edgexray(tmp_path):
    env = blocked_env(tmp_path)
    for module in ("tensorflow", "tf_keras", "edgexray"):
        result = subprocess.run([sys.executable, "-c", f"import {module}"], env=env)
        assert result.returncode != 0
    assert attempted_imports(env) == ["tensorflow", "tf_keras", "edgexray"]


@pytest.mark.parametrize("kind", ["float32", "int8"])
def test_script_reads_odd_images_without_tensorflow(
    device, odd_images, tiny_tflite, tmp_path, kind
):
    model = tiny_tflite[kind]
    result = run_script(device, tmp_path, "--model", model, odd_images)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    records = jsonl(result.stdout)
    assert [Path(r["path"]).name for r in records] == sorted(READABLE + UNREADABLE)
    classifier = Classifier(model)
    for record in records:
        if Path(record["path"]).name in UNREADABLE:
            assert set(record) == {"path", "error"}
            continue
        flat = Path(record["path"]).name == "one pixel.png"  # nothing in it: warned
        assert set(record) == RECORD_KEYS | ({"quality_warning"} if flat else set()), record
        assert record["threshold"] == classifier.threshold
        expected_label = "PNEUMONIA" if record["probability"] >= record["threshold"] else "NORMAL"
        expected_label = "OUT_OF_SCOPE" if flat else expected_label
        assert record["label"] == expected_label and record["latency_ms"] > 0
        assert record["probability"] == pytest.approx(
            classifier.probability(record["path"]), abs=1e-6
        )
    errors = {Path(r["path"]).name: r["error"] for r in records if "error" in r}
    assert all("decompression bomb" in errors[name] for name in UNREADABLE if "bomb" in name)
    assert "truncated" in errors["truncated.jpeg"]


def test_exif_orientation_is_applied(device, tiny_tflite, tmp_path):
    folder = tmp_path / "orientation"
    folder.mkdir()
    exif_rotated_jpeg(folder / "a exif.jpg", np.random.default_rng(3))
    with Image.open(folder / "a exif.jpg") as stored:  # the pixels as stored, sideways
        sideways = np.asarray(stored.convert("L"))
    Image.fromarray(np.rot90(sideways, k=-1).copy()).save(folder / "b upright by hand.png")
    Image.fromarray(sideways).save(folder / "c sideways.png")
    spec = json.loads(tiny_tflite["float32"].with_suffix(".json").read_text())["input"]
    exif, by_hand, sideways_input = (preprocess(p, spec) for p in sorted(folder.iterdir()))
    assert np.array_equal(exif, by_hand) and not np.array_equal(exif, sideways_input)

    result = run_script(device, tmp_path, "--model", tiny_tflite["float32"], folder)
    assert result.returncode == 0, result.stderr
    exif_p, by_hand_p, _ = (r["probability"] for r in jsonl(result.stdout))
    assert exif_p == pytest.approx(by_hand_p, abs=1e-6)


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="needs ../shared/data")
def test_real_films_match_the_in_package_classifier_as_csv(device, tiny_tflite, tmp_path):
    films = [
        sorted((SHARED_TRAIN / label).iterdir())[i]
        for label in ("NORMAL", "PNEUMONIA")
        for i in (0, 1)
    ]
    result = run_script(
        device,
        tmp_path,
        "--model",
        tiny_tflite["int8"],
        "--format",
        "csv",
        "--threads",
        "1",
        *films,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == list(RECORD_FIELDS)
    assert [row["path"] for row in rows] == [str(f) for f in films]
    classifier = Classifier(tiny_tflite["int8"])
    for row in rows:
        assert row["error"] == ""
        assert float(row["probability"]) == pytest.approx(
            classifier.probability(row["path"]), abs=1e-6
        )


def corrupt_copies(tiny_tflite, folder: Path) -> dict[str, list[str]]:
    """Broken models, each with the arguments that should make the script exit 2."""
    folder.mkdir()
    source = tiny_tflite["int8"]
    sidecar = json.loads(source.with_suffix(".json").read_text())

    def copy(name: str, data: bytes) -> str:
        (folder / f"{name}.tflite").write_bytes(data)
        return str(folder / f"{name}.tflite")

    data = source.read_bytes()
    corrupt = data[: len(data) // 3]  # no metadata left: an old model with its .json
    (folder / "corrupt.json").write_text(
        json.dumps({**sidecar, "sha256": hashlib.sha256(corrupt).hexdigest()})
    )
    return {
        "model not found": [str(folder / "missing.tflite")],
        "not a loadable .tflite": [copy("corrupt", corrupt)],
        "sha256 differs": [copy("replaced", with_graph_changed(data))],
        "carries no edgexray metadata and has no sidecar": [
            copy("no sidecar", data[: metadata.read(source).flatbuffer_size])
        ],
    }


def test_bad_models_and_arguments_exit_2_with_one_line(device, tiny_tflite, odd_images, tmp_path):
    cases = {
        message: ["--model", model, odd_images]
        for message, (model,) in corrupt_copies(tiny_tflite, tmp_path / "broken models").items()
    }
    good = str(tiny_tflite["int8"])
    cases["threads must be between 1 and 64"] = ["--model", good, "--threads", "0", odd_images]
    cases["invalid choice"] = ["--model", good, "--format", "xml", odd_images]
    cases["required: IMAGE_OR_DIR"] = ["--model", good]
    cases["no images found"] = ["--model", good, tmp_path / "broken models"]
    cases["give --model"] = [odd_images]  # no .tflite next to the script
    for message, args in cases.items():
        result = run_script(device, tmp_path, *args)
        assert result.returncode == 2, (message, result.stderr)
        assert message in one_error_line(result.stderr) and result.stdout == ""


def test_default_model_is_the_only_tflite_next_to_the_script(tiny_tflite, odd_images, tmp_path):
    bundle = tmp_path / "bundle like"
    write_runtime(bundle)
    for suffix in (".tflite", ".json"):
        shutil.copyfile(tiny_tflite["int8"].with_suffix(suffix), bundle / f"int8{suffix}")
    image = odd_images / "UPPER CASE.PNG"
    result = run_blocked([sys.executable, str(bundle / "infer.py"), str(image)], tmp_path)
    assert result.returncode == 0 and len(jsonl(result.stdout)) == 1
    shutil.copyfile(tiny_tflite["float32"], bundle / "float32.tflite")
    result = run_blocked([sys.executable, str(bundle / "infer.py"), str(image)], tmp_path)
    assert result.returncode == 2 and "give --model" in one_error_line(result.stderr)


def test_main_returns_exit_codes_in_process(tiny_tflite, odd_images, capsys):
    assert device_cli.main(["--model", str(tiny_tflite["int8"]), str(odd_images / "rgba.png")]) == 0
    assert device_cli.main(["--model", str(tiny_tflite["int8"]), str(odd_images)]) == 3
    assert device_cli.main(["--model", str(odd_images / "none.tflite"), str(odd_images)]) == 2
    assert "model not found" in capsys.readouterr().err


runner = CliRunner()


def test_predict_command_prints_the_scripts_records(device, tiny_tflite, odd_images, tmp_path):
    args = ["--model", str(tiny_tflite["int8"]), str(odd_images)]
    result = runner.invoke(app, ["predict", *args])
    assert result.exit_code == 3, result.output
    script = run_script(device, tmp_path, *args)
    drop_latency = [{k: v for k, v in r.items() if k != "latency_ms"} for r in jsonl(script.stdout)]
    command = [{k: v for k, v in r.items() if k != "latency_ms"} for r in jsonl(result.stdout)]
    assert command == drop_latency


def test_predict_without_the_reference_model_exits_2(monkeypatch, odd_images, tmp_path):
    monkeypatch.setattr("edgexray.edge_runtime.REFERENCE_MODEL", tmp_path / "edgexray-int8.tflite")
    result = runner.invoke(app, ["predict", str(odd_images)])
    assert result.exit_code == 2
    assert "shipped model not found" in one_error_line(result.output)


def test_predict_with_a_replaced_model_exits_2(tiny_tflite, odd_images, tmp_path):
    (model,) = corrupt_copies(tiny_tflite, tmp_path / "broken")["sha256 differs"]
    result = runner.invoke(app, ["predict", "--model", model, str(odd_images)])
    assert result.exit_code == 2 and "sha256 differs" in one_error_line(result.output)
