"""Records (outputs/records.py): a full disk is one error line, odd file names stay valid text."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_xray
from edge_support import one_error_line, predict, script
from PIL import Image

from edgexray.edge_runtime import REFERENCE_MODEL, batch


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


def test_records_of_non_utf8_file_names_are_valid_text(tmp_path):
    folder = tmp_path / "films"
    folder.mkdir()
    name = os.fsdecode(b"film \xe9.png")
    synthetic_xray(np.random.default_rng(1), pneumonia=False).save(folder / name)
    (folder / os.fsdecode(b"broken \xff.png")).write_bytes(b"not a film")
    stream = io.StringIO()
    batch.run(REFERENCE_MODEL, [folder], stream=stream)
    for line in stream.getvalue().splitlines():
        line.encode("utf-8")  # no lone surrogate
        assert "\\udc" not in line
    paths = sorted(json.loads(line)["path"] for line in stream.getvalue().splitlines())
    assert [Path(p).name for p in paths] == ["broken \\xff.png", "film \\xe9.png"]


def test_a_csv_cell_never_starts_a_spreadsheet_formula(tiny_tflite, tmp_path, monkeypatch):
    # A film named like a formula, given by its name, became a live cell in a spreadsheet
    # (sweep 3, L7): the cell is now text, the name kept after a quote.

    monkeypatch.chdir(tmp_path)
    name = '=HYPERLINK("http:,,127.0.0.1","x")+1.png'
    Image.new("L", (40, 48), 90).save(name)
    output = io.StringIO()
    batch.run(tiny_tflite["int8"], [name], "csv", stream=output)
    (row,) = list(csv.DictReader(io.StringIO(output.getvalue())))
    assert row["path"] == "'" + name
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row.values())
