"""Hostile input on the device side: full disks, FIFOs, foreign formats, odd sidecars, flat
films, re-bundling over a user's files, and the one image-discovery rule every reader uses."""

from __future__ import annotations

import json
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
from edge_support import make_venv, one_error_line, run_blocked
from PIL import Image
from typer.testing import CliRunner

from edgexray import artifacts
from edgexray.cli import app
from edgexray.edge_runtime import readers
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.errors import ImageError, InferenceError
from edgexray.edge_runtime.preprocess import quality_warning, resized_grayscale
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.errors import EdgexrayError
from edgexray.export.bundle import BundleConfig, make_bundle
from edgexray.pipeline import data, evaluate

runner = CliRunner()
EDGEXRAY = Path(sys.executable).with_name("edgexray")  # the installed console script


@pytest.fixture
def film(tmp_path) -> Path:
    path = tmp_path / "a film.png"
    synthetic_xray(np.random.default_rng(0), pneumonia=True).save(path)
    return path


def script(device: Path, *args) -> list[str]:
    return [sys.executable, str(device / "infer.py"), *map(str, args)]


def predict(*args) -> list[str]:
    return [str(EDGEXRAY), "predict", *map(str, args)]


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    # A subprocess with a timeout: a hang must fail the test, not stall the suite.
    return subprocess.run(args, capture_output=True, text=True, timeout=90, **kwargs)


# --- the device script and predict ------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_is_one_error_line_and_exit_2(device, tiny_tflite, film):
    model = tiny_tflite["int8"]
    for args in (script(device, "--model", model, film), predict("--model", model, film)):
        with open("/dev/full", "w") as full:
            result = subprocess.run(
                args, stdout=full, stderr=subprocess.PIPE, text=True, timeout=90
            )
        assert result.returncode == 2, result.stderr
        message = one_error_line(result.stderr)
        assert message == "error: cannot write the results: No space left on device"


def test_only_jpeg_and_png_are_decoded(tmp_path):
    image = synthetic_xray(np.random.default_rng(1), pneumonia=False)
    image.save(tmp_path / "bitmap.png", format="BMP")
    image.save(tmp_path / "tiff.jpg", format="TIFF")
    # PostScript would be handed to Ghostscript if Pillow were allowed to identify it.
    (tmp_path / "postscript.jpg").write_bytes(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nshowpage\n"
    )
    for name in ("bitmap.png", "tiff.jpg", "postscript.jpg"):
        with pytest.raises(ImageError, match="not a JPEG, PNG or DICOM image"):
            readers.read(tmp_path / name)[0]


def test_a_fifo_named_like_a_film_never_hangs(device, tiny_tflite, film, tmp_path):
    folder = tmp_path / "films"
    folder.mkdir()
    shutil.copyfile(film, folder / "a film.png")
    os.mkfifo(folder / "x.jpeg")
    model = tiny_tflite["int8"]
    for command in (script(device, "--model", model), predict("--model", model)):
        walked = run(command + [str(folder)])  # skipped: only regular files are images
        assert walked.returncode == 0, walked.stderr
        assert [json.loads(line)["path"] for line in walked.stdout.splitlines()] == [
            str(folder / "a film.png")
        ]
        given = run(command + [str(folder / "x.jpeg")])  # named: an error record
        assert given.returncode == 3, given.stderr
        assert json.loads(given.stdout)["error"] == "not a regular file"


@pytest.mark.parametrize("threads", ["0", "65", "100000"])
def test_thread_count_is_bounded(device, tiny_tflite, film, threads):
    model = tiny_tflite["int8"]
    for command in (script(device, "--model", model), predict("--model", model)):
        result = run(command + ["--threads", threads, str(film)])
        assert result.returncode == 2 and result.stdout == ""
        assert f"threads must be between 1 and 64, not {threads}" in one_error_line(result.stderr)


@pytest.mark.parametrize(
    "labels",
    [
        ["NORMAL", "PNEU\nMONIA"],
        ["NORMAL", 'PNEUMONIA"); evil("'],
        ["", "PNEUMONIA"],
        ["NORMAL", "P" * 33],
        ["1NORMAL", "PNEUMONIA"],
    ],
)
def test_sidecar_labels_must_be_plain_names(tiny_tflite, tmp_path, labels):
    model = tmp_path / "model.tflite"
    shutil.copyfile(tiny_tflite["int8"], model)
    sidecar = json.loads(tiny_tflite["int8"].with_suffix(".json").read_text())
    sidecar.update(labels=labels, positive_label=labels[1])
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(InferenceError, match="labels must be plain names"):
        load_sidecar(model)
    with pytest.raises(EdgexrayError, match="labels must be plain names"):
        make_bundle(BundleConfig(str(model), "android", str(tmp_path / "bundle")))
    # Plain names, but not the classes the model was trained on, in that order: refused too.
    sidecar.update(labels=["No Finding", "PNEUMONIA_2"], positive_label="PNEUMONIA_2")
    model.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(InferenceError, match="not the order the model was trained in"):
        load_sidecar(model)


def test_flat_or_blank_images_get_a_quality_warning(tiny_tflite, tmp_path):
    Image.new("L", (64, 64), 255).save(tmp_path / "a blank.png")
    Image.new("L", (300, 200), 90).save(tmp_path / "b grey.jpg", quality=90)
    rng = np.random.default_rng(4)
    faint = np.full((64, 64), 120) + rng.integers(0, 3, (64, 64))  # 3 grey levels
    Image.fromarray(faint.astype(np.uint8)).save(tmp_path / "c faint.png")
    synthetic_xray(rng, pneumonia=True).save(tmp_path / "d film.png")
    classifier = Classifier(tiny_tflite["int8"])
    records = [classifier.classify(p) for p in sorted(tmp_path.iterdir())]
    assert ["quality_warning" in r for r in records] == [True, True, True, False]
    assert records[0]["quality_warning"].startswith("flat or blank image")
    assert "probability" in records[0]  # still scored: the warning is added, not instead
    # ... and the film is out of scope: no NORMAL/PNEUMONIA for an image with nothing in it
    assert [r["label"] == "OUT_OF_SCOPE" for r in records] == [True, True, True, False]


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="needs ../shared/data")
def test_real_films_get_no_quality_warning():
    spec = {"height": 128, "width": 128}
    for label in ("NORMAL", "PNEUMONIA"):
        for path in sorted((SHARED_TRAIN / label).iterdir())[:10]:
            assert quality_warning(resized_grayscale(path, spec)) is None, path


def test_every_reader_finds_the_same_images(device, tmp_path):
    root = tmp_path / "x rays"
    rng = np.random.default_rng(6)
    expected = []
    for label in ("NORMAL", "PNEUMONIA"):
        folder = root / label
        (folder / ".cache").mkdir(parents=True)
        (folder / "sub").mkdir()
        for name in ("B.PNG", "a.jpeg", "sub/c.jpg"):
            synthetic_xray(rng, label == "PNEUMONIA").save(folder / name, format="PNG")
            expected.append(folder / name)
        synthetic_xray(rng, False).save(folder / ".cache" / "d.png")  # hidden folder
        (folder / "._a.jpeg").write_bytes(b"\x00\x05\x16\x07 macOS AppleDouble")
        (folder / "notes.txt").write_text("not an image")
        os.mkfifo(folder / "e.jpeg")
        (folder / "f.jpg").mkdir()  # a folder named like an image
    listing = run(script(device, "--list-images", root))
    assert listing.returncode == 0, listing.stderr
    by_data = data.list_images(root)
    assert by_data[0] + by_data[1] == expected
    assert evaluate.find_images(root).paths == [str(p) for p in expected]
    assert readers.find([root]) == expected
    assert listing.stdout.split("\0")[:-1] == [str(p) for p in expected]


# --- the rpi watch-folder service ------------------------------------------------------


@pytest.fixture
def pi(tiny_tflite, tmp_path) -> Path:
    """A Pi home with the rpi bundle at edgexray/ and its venv, as the README sets it up."""
    home = tmp_path / "pi home"
    make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(home / "edgexray")))
    make_venv(home / "edgexray")
    return home


def drop_films(inbox: Path, count: int) -> list[str]:
    inbox.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for i in range(count):
        path = inbox / f"film {i}.png"
        synthetic_xray(rng, pneumonia=bool(i % 2)).save(path)
        os.utime(path, (time.time() - 60, time.time() - 60))  # copied a minute ago
    return [f"film {i}.png" for i in range(count)]


def watch_once(home: Path, results, tmp_path: Path) -> subprocess.CompletedProcess:
    folders = [str(home / "inbox"), str(home / "done"), str(results)]
    return run_blocked(
        ["sh", str(home / "edgexray" / "watch-folder.sh"), *folders], tmp_path, env={"ONCE": "1"}
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_watch_folder_never_moves_a_film_whose_record_was_not_written(pi, tmp_path):
    names = drop_films(pi / "inbox", 3)
    os.mkfifo(pi / "inbox" / "pipe.jpeg")  # not a film: neither hangs nor moves
    full = watch_once(pi, "/dev/full", tmp_path)
    assert full.returncode != 0 and "cannot append the records" in full.stderr
    assert list((pi / "done").iterdir()) == []
    waiting = (pi / "inbox" / ".processing").rglob("*")
    assert sorted(p.name for p in waiting if p.is_file()) == names

    results = pi / "results.jsonl"
    again = watch_once(pi, results, tmp_path)  # the next start classifies what waited
    assert again.returncode == 0, again.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == names
    assert all((pi / "done" / r["path"]).is_file() for r in records)  # relative to done/
    assert sorted(p.name for p in (pi / "inbox").iterdir()) == [".processing", "pipe.jpeg"]


def test_watch_folder_stops_and_keeps_the_films_when_the_runtime_fails(pi, tmp_path):
    names = drop_films(pi / "inbox", 2)
    model = pi / "edgexray" / "int8.tflite"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")  # no longer matches its sidecar
    result = watch_once(pi, pi / "results.jsonl", tmp_path)
    assert result.returncode == 2 and "sha256 differs" in result.stderr
    assert list((pi / "done").iterdir()) == [] and not (pi / "results.jsonl").exists()
    waiting = (pi / "inbox" / ".processing").rglob("*")
    assert sorted(p.name for p in waiting if p.is_file()) == names


# --- bundles --------------------------------------------------------------------------


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


def test_write_errors_name_the_file_not_its_temporary(tmp_path):
    target = tmp_path / "metrics.json"

    def disk_full(temporary: Path) -> None:
        raise OSError(28, "No space left on device", str(temporary))

    with pytest.raises(OSError) as failure:
        artifacts.atomic_write(target, disk_full)
    assert failure.value.filename == str(target) and failure.value.errno == 28
    assert list(tmp_path.iterdir()) == []


def python_wrapper(home: Path, script: str) -> dict[str, str]:
    """PYTHON for the watcher: the bundle's venv python, with `script` (sh, where $batch is
    the batch being classified, "" otherwise) run before or around classifying."""
    wrapper = home / "python wrapper.sh"
    real = home / "edgexray" / ".venv" / "bin" / "python"
    wrapper.write_text(
        "#!/bin/sh\nbatch=''\nfor arg; do [ \"$arg\" = --model ] && model=1; last=$arg; done\n"
        '[ -n "${model:-}" ] && batch=$last\n' + script.replace("REAL", f"'{real}'")
    )
    wrapper.chmod(0o755)
    return {"ONCE": "1", "PYTHON": str(wrapper)}


def watch(home: Path, tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    folders = [str(home / "inbox"), str(home / "done"), str(home / "results.jsonl")]
    return run_blocked(
        ["sh", str(home / "edgexray" / "watch-folder.sh"), *folders], tmp_path, env=env
    )


def test_watch_folder_quarantines_a_film_that_kills_the_runtime(pi, tmp_path):
    names = drop_films(pi / "inbox", 2)
    poison = pi / "inbox" / "poison film.png"
    shutil.copyfile(pi / "inbox" / names[0], poison)
    os.utime(poison, (time.time() - 60, time.time() - 60))
    # Killed as the kernel's out-of-memory killer would, whenever the batch holds the poison.
    env = python_wrapper(
        pi,
        'if [ -n "$batch" ] && ls "$batch" | grep -q poison; then kill -9 $$; fi\nexec REAL "$@"\n',
    )
    codes = [watch(pi, tmp_path, env).returncode for _ in range(3)]
    assert codes == [137, 137, 0]
    records = [json.loads(line) for line in (pi / "results.jsonl").read_text().splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert sorted(by_name) == sorted([*names, "poison film.png"])
    assert "quarantined" in by_name["poison film.png"]["error"]
    assert (pi / "done" / by_name["poison film.png"]["path"]).is_file()
    assert all("probability" in by_name[name] for name in names)
    assert list((pi / "inbox" / ".processing").iterdir()) == []
    assert watch(pi, tmp_path, env).returncode == 0  # and the service goes on


def test_watch_folder_classifies_again_a_film_written_to_after_it_was_taken(pi, tmp_path):
    (name,) = drop_films(pi / "inbox", 1)
    film = pi / "inbox" / name
    whole = film.read_bytes()
    film.write_bytes(whole[: len(whole) // 2])  # the copy paused half-way...
    os.utime(film, (time.time() - 60, time.time() - 60))
    rest = pi / "rest of the film"
    rest.write_bytes(whole[len(whole) // 2 :])
    # ...and finishes while the watcher classifies the half it took.
    env = python_wrapper(
        pi,
        f'REAL "$@"; status=$?\nif [ -n "$batch" ] && [ -e \'{rest}\' ]; then'
        f" cat '{rest}' >> \"$batch/{name}\"; rm '{rest}'; fi\n"
        "exit $status\n",
    )
    assert watch(pi, tmp_path, env).returncode == 0
    assert film.read_bytes() == whole  # back in the inbox, whole
    os.utime(film, (time.time() - 60, time.time() - 60))
    assert watch(pi, tmp_path, env).returncode == 0
    records = [json.loads(line) for line in (pi / "results.jsonl").read_text().splitlines()]
    assert [("error" in r, "probability" in r) for r in records] == [(True, False), (False, True)]
    assert (pi / "done" / records[1]["path"]).read_bytes() == whole


def test_a_record_cut_short_by_a_full_disk_does_not_swallow_the_next(pi, tmp_path):
    drop_films(pi / "inbox", 1)
    results = pi / "results.jsonl"
    results.write_text('{"path": "earlier.png", "probability": 0.5}\n{"path": "cut.png", "pro')
    assert watch_once(pi, results, tmp_path).returncode == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["path"] for r in records][0] == "earlier.png" and len(records) == 2


def test_watch_unit_is_sandboxed(tiny_tflite, tmp_path):
    bundle = Path(
        make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(tmp_path / "b")))["path"]
    )
    unit = (bundle / "edgexray-watch@.service").read_text()
    for directive in (
        "UMask=0077",
        "MemoryMax=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "PrivateNetwork=yes",
        "ReadWritePaths=",
    ):
        assert directive in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the score is not checked")
    instance = tmp_path / "edgexray-watch@pi.service"
    instance.write_text(unit.replace("%i", "pi"))
    result = run([analyze, "security", "--offline=yes", str(instance)])
    score = float(result.stdout.rsplit("exposure level for", 1)[1].split(":")[1].split()[0])
    assert score <= 1.0, result.stdout[-500:]  # the unit without sandboxing scored 9.2
