"""Which files are films: one discovery rule for every lister, and FIFOs never block."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from conftest import synthetic_xray
from edge_support import predict, run, script

from edgexray.edge_runtime import readers
from edgexray.pipeline import data, evaluate


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
