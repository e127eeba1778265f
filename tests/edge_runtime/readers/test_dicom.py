"""DICOM films in, by the one rendering rule: written from real test/ films and public ones."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import SHARED_TRAIN, synthetic_xray
from dicom_support import (
    film_dataset,
    secondary_capture,
    write_film,
    write_jpeg_baseline,
    write_jpeg_lossless,
)
from edge_support import run_blocked
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL, readers
from edgexray.edge_runtime.errors import EXIT_UNREADABLE, ImageError
from edgexray.edge_runtime.readers import dicom
from edgexray.pipeline import data

SHARED_TEST = SHARED_TRAIN.parent / "test"
runner = CliRunner()


@pytest.fixture(scope="module")
def films() -> dict[str, np.ndarray]:
    """A NORMAL and a PNEUMONIA film of test/ (shrunk, so encoders are quick), else synthetic."""
    found = {}
    for label in ("NORMAL", "PNEUMONIA"):
        if SHARED_TEST.is_dir():
            image = Image.open(sorted((SHARED_TEST / label).iterdir())[0]).convert("L")
            image.thumbnail((200, 200))
        else:
            image = synthetic_xray(np.random.default_rng(1), label == "PNEUMONIA", (150, 180))
        found[label] = np.asarray(image)
    return found


def predict(*args) -> tuple[int, list[dict]]:
    result = runner.invoke(app, ["predict", *map(str, args)])
    assert "Traceback" not in result.output
    return result.exit_code, [json.loads(line) for line in result.stdout.splitlines()]


VARIANTS = [
    dict(bits=bits, monochrome1=mono1, window=window, rescale=rescale)
    for bits in (12, 16)
    for mono1 in (False, True)
    for window in (False, True)
    for rescale in (None, (2.0, -1024.0))
]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(map(str, o.values())))
def test_written_dicom_renders_to_the_film_itself(films, tmp_path, options):
    path = write_film(tmp_path / "a film.dcm", films["PNEUMONIA"], **options)
    film, info = dicom.read_film(path)
    assert np.array_equal(film, films["PNEUMONIA"])
    assert ("MONOCHROME1 inverted" in info["rendering"]) == options["monochrome1"]
    assert ("window 1 of 1" in info["rendering"]) == options["window"]
    assert ("full stored range" in info["rendering"]) != options["window"]
    assert ("rescale slope 2" in info["rendering"]) == bool(options["rescale"])
    assert info["tags"]["Modality"] == "DX" and info["tags"]["BitsStored"] == options["bits"]


def test_uncompressed_and_lossless_dicom_give_the_probability_of_the_png(films, tmp_path):
    folder = tmp_path / "clinic export"
    folder.mkdir()
    lossless = {
        "uncompressed": None,
        "RLE": RLELossless,
        "J2K lossless": JPEG2000Lossless,
        "JPEG-LS lossless": JPEGLSLossless,
    }
    for label, film in films.items():
        Image.fromarray(film).save(folder / f"{label}.png")
        for name, syntax in lossless.items():
            write_film(folder / f"{label} {name}.dcm", film, syntax, bits=12, monochrome1=True)
        write_jpeg_lossless(folder / f"{label} JPEG lossless.dcm", film, bits=16, window=True)
        write_film(folder / f"{label} no suffix", film, bits=16, window=True)
    code, records = predict(folder)
    assert code == 0 and len(records) == 2 * 7
    for label in films:
        mine = [r for r in records if Path(r["path"]).name.startswith(label)]
        assert len({r["probability"] for r in mine}) == 1, mine  # identical, not close
        assert {r["rendering"].split(",")[0] for r in mine} == {
            "8-bit PNG",
            "DICOM 12-bit",
            "DICOM 16-bit",
        }


def test_lossy_dicom_is_read_close_to_the_film(films, tmp_path):
    film = films["NORMAL"]
    jpeg = write_jpeg_baseline(tmp_path / "baseline.dcm", film, quality=90)
    j2k = write_film(tmp_path / "j2k lossy.dcm", film, None, bits=12)
    ds = pydicom.dcmread(j2k)
    ds.compress(JPEG2000, j2k_cr=[20])
    ds.save_as(j2k)
    for path in (jpeg, j2k):
        rendered, _ = dicom.read_film(path)
        difference = np.abs(rendered.astype(int) - film)
        assert 0 < difference.max() and difference.mean() < 3, path.name


@pytest.fixture(scope="module")
def public(tmp_path_factory) -> Path:
    """pydicom's real adult chest film (CR, MONOCHROME1, 15 bits, 1955x1841), uncompressed,
    JPEG 2000 lossless and JPEG 2000 lossy, in a folder."""
    folder = tmp_path_factory.mktemp("public") / "pydicom data"
    folder.mkdir()
    for name in ("RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"):
        shutil.copyfile(get_testdata_file(name), folder / name)
    return folder


def test_a_public_chest_radiograph_is_rendered_and_predicted(public):
    code, records = predict(public)
    assert code == 4  # every film read; out of scope, see below
    found = {Path(r["path"]).name: r for r in records}
    assert set(found) == set(os.listdir(public))
    # Uncompressed and lossless JPEG 2000: the same pixels, the same probability.
    assert found["RG1_UNCR.dcm"]["probability"] == found["RG1_J2KR.dcm"]["probability"]
    assert found["RG1_UNCR.dcm"]["rendering"] == (
        "DICOM 15-bit, window 1 of 1 (C=15000 W=30000, LINEAR), MONOCHROME1 inverted"
    )
    # Issue 18: rendered right, this adult film is below the threshold (NORMAL); not
    # inverted, it was PNEUMONIA 0.99. Its tags say the patient is 64: the model knows
    # children aged 1-5, so it is labelled OUT_OF_SCOPE all the same.
    for name in ("RG1_UNCR.dcm", "RG1_J2KI.dcm"):
        assert found[name]["probability"] < found[name]["threshold"]
        assert found[name]["label"] == "OUT_OF_SCOPE" and "aged 64" in found[name]["scope_reason"]


def test_a_public_shin_radiograph_reads_the_same_uncompressed_or_lossless():
    # Not a chest: the tags the scope guard reads say so; the rendering is the same rule.
    uncompressed, info = dicom.read_film(get_testdata_file("RG3_UNCR.dcm"))
    lossless, _ = dicom.read_film(get_testdata_file("RG3_J2KR.dcm"))
    assert np.array_equal(uncompressed, lossless)
    assert info["rendering"] == (
        "DICOM 10-bit, window 1 of 1 (C=550 W=1024, LINEAR), MONOCHROME1 inverted"
    )
    assert info["tags"]["BodyPartExamined"] == "EXTREMITY" and info["tags"]["Modality"] == "CR"


def test_the_device_runtime_reads_dicom_without_tensorflow_or_edgexray(
    device, public, films, tmp_path
):
    written = write_jpeg_lossless(tmp_path / "IM 0001", films["NORMAL"], bits=12, window=True)
    args = ["--model", REFERENCE_MODEL, public / "RG1_UNCR.dcm", written]
    on_device = run_blocked([sys.executable, str(device / "infer.py"), *map(str, args)], tmp_path)
    assert on_device.returncode == 4, on_device.stderr  # the adult film is out of scope
    code, on_host = predict(*args)
    device_records = [json.loads(line) for line in on_device.stdout.splitlines()]
    drop = ("latency_ms",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in device_records] == [
        {k: v for k, v in r.items() if k not in drop} for r in on_host
    ]


def test_a_device_without_pydicom_names_the_bundles_dicom_requirements(device, films, tmp_path):
    path = write_film(tmp_path / "film.dcm", films["NORMAL"])
    args = [sys.executable, str(device / "infer.py"), "--model", str(REFERENCE_MODEL), str(path)]
    result = run_blocked(args, tmp_path, also_block=("pydicom",))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert json.loads(result.stdout)["error"] == (
        "reading DICOM needs pydicom: "
        ".venv/bin/pip install --only-binary=:all: -r requirements-dicom.txt"
    )
    listed = run_blocked([*args[:2], "--list-images", str(tmp_path)], tmp_path, ("pydicom",))
    assert listed.stdout == f"{path}\0"  # found by its suffix all the same


REFUSED = {
    "emri_small.dcm": "10 frames",
    "SC_rgb.dcm": "colour image (RGB",
    "US1_J2KR.dcm": "colour image (YBR_RCT",
    "test-SR.dcm": "structured report (SR)",
    "rtplan.dcm": "radiotherapy (RT) object",
    "rtdose_rle_1frame.dcm": "radiotherapy (RT) object",
}


def test_non_films_are_refused_with_a_reason_and_exit_3(tmp_path):
    folder = tmp_path / "not films"
    folder.mkdir()
    for name in REFUSED:
        shutil.copyfile(get_testdata_file(name), folder / name)
    code, records = predict(folder)
    assert code == EXIT_UNREADABLE
    errors = {Path(r["path"]).name: r["error"] for r in records}
    assert all(set(r) == {"path", "error"} for r in records)
    for name, reason in REFUSED.items():
        assert reason in errors[name] and "\n" not in errors[name], errors[name]


def test_every_small_pydicom_test_file_is_a_film_or_one_line_of_reason():
    # pydicom's own test files and pydicom-data's, listed locally (get_testdata_files would
    # try to download what is missing).
    folders = {Path(get_testdata_file(name)).parent for name in ("rtplan.dcm", "RG1_UNCR.dcm")}
    files = [f for d in folders for f in sorted(d.iterdir()) if f.stat().st_size < 2**18]
    outcomes = {"read": 0, "refused": 0}
    for path in files:
        try:
            film, info = readers.read(path)
        except ImageError as err:  # nothing else may escape: no traceback on a device
            assert str(err).startswith(f"{path}: ") and "\n" not in str(err)
            outcomes["refused"] += 1
            continue
        assert film.dtype == np.uint8 and film.ndim == 2 and info["rendering"]
        outcomes["read"] += 1
    assert outcomes["read"] >= 20 and outcomes["refused"] >= 50, outcomes


def test_the_runtime_run_as_a_module_reports_refusals_as_records(tmp_path):
    colour = Path(shutil.copyfile(get_testdata_file("SC_rgb.dcm"), tmp_path / "colour.dcm"))
    args = ["-m", "edgexray.edge_runtime.infer", "--model", str(REFERENCE_MODEL), str(colour)]
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr
    assert "colour image" in json.loads(result.stdout)["error"]


def test_a_presentation_state_or_object_without_pixels_is_refused(films, tmp_path):
    state = film_dataset(films["NORMAL"])
    state.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"  # grayscale softcopy presentation state
    state.save_as(tmp_path / "gsps.dcm", enforce_file_format=True)
    empty = film_dataset(films["NORMAL"])
    del empty.PixelData
    empty.save_as(tmp_path / "no pixels.dcm", enforce_file_format=True)
    code, records = predict(tmp_path / "gsps.dcm", tmp_path / "no pixels.dcm")
    assert code == 3
    assert "presentation state" in records[0]["error"]
    assert "without pixel data" in records[1]["error"]


def test_without_pydicom_a_dicom_film_gets_one_line_naming_the_extra(films, tmp_path, monkeypatch):
    path = write_film(tmp_path / "film.dcm", films["NORMAL"])
    Image.fromarray(films["NORMAL"]).save(tmp_path / "film.png")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    code, records = predict(path, tmp_path / "film.png")
    assert code == 3
    assert records[0]["error"] == 'reading DICOM needs pydicom: pip install "edgexray[dicom]"'
    assert records[1]["label"] in ("NORMAL", "PNEUMONIA")  # JPEG/PNG never need it


def test_a_missing_decoder_plugin_gets_one_line_naming_the_extra(films, tmp_path, monkeypatch):
    path = write_film(tmp_path / "film.dcm", films["NORMAL"], JPEG2000Lossless)

    class Unavailable:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda syntax: Unavailable())
    with pytest.raises(ImageError) as refused:
        dicom.read_film(path)
    assert str(refused.value).endswith(
        "JPEG 2000 Image Compression (Lossless Only) pixel data needs a decoder plugin "
        '(pylibjpeg): pip install "edgexray[dicom]"'
    )


def test_dicom_is_found_by_suffix_or_preamble_but_not_hidden_or_dicomdir(films, tmp_path):
    folder = tmp_path / "PACS export"
    (folder / "SERIES 1").mkdir(parents=True)
    ds = film_dataset(films["NORMAL"])
    for name in ("IM000001", "1.2.840.113619.2.55.3.320", "UPPER.DCM", ".hidden.dcm", "DICOMDIR"):
        ds.save_as(folder / "SERIES 1" / name, enforce_file_format=True)
    (folder / "notes").write_text("a note without a suffix\n")
    (folder / "short").write_bytes(b"DICM")
    found = [p.name for p in readers.film_files(folder)]
    assert found == ["1.2.840.113619.2.55.3.320", "IM000001", "UPPER.DCM"]
    assert readers.reader_for(folder / "SERIES 1" / "IM000001") is readers.DICOM
    assert readers.reader_for(folder / "notes") is not readers.DICOM
    assert readers.reader_for(tmp_path / "missing.dcm") is readers.DICOM


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_named_dcm_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.dcm"
    os.mkfifo(fifo)
    assert not readers.is_film_file(fifo) and not dicom.has_preamble(fifo)
    with pytest.raises(ImageError, match="not a regular file"):
        readers.read(fifo)


def test_a_huge_header_is_refused_before_decoding(films, tmp_path):
    ds = film_dataset(films["NORMAL"])
    ds.Rows, ds.Columns = 20000, 20000
    ds.save_as(tmp_path / "bomb.dcm", enforce_file_format=True)
    with pytest.raises(ImageError, match="decompression bomb"):
        readers.read(tmp_path / "bomb.dcm")


def forged_codestream(path: Path, film: np.ndarray, syntax, declared: tuple[int, int]) -> Path:
    """A compressed film whose own frame header (JPEG SOF, JPEG 2000 SIZ) declares
    declared (width, height), while the DICOM header keeps the film's real size."""
    import struct

    from pydicom.encaps import encapsulate

    buffer = io.BytesIO()
    if syntax == JPEG2000Lossless:
        Image.fromarray(film).save(buffer, format="JPEG2000", no_jp2=True, irreversible=False)
        code = bytearray(buffer.getvalue())
        at = code.find(b"\xff\x51")  # SIZ: Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz after Lsiz, Rsiz
        struct.pack_into(">IIIIII", code, at + 6, *declared, 0, 0, *declared)
    else:
        Image.fromarray(film).save(buffer, format="JPEG", quality=90)
        code = bytearray(buffer.getvalue())
        at = code.find(b"\xff\xc0")  # SOF0: length, precision, then height and width
        struct.pack_into(">HH", code, at + 5, declared[1], declared[0])
    ds = film_dataset(film, bits=8)
    ds.BitsAllocated = 8
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([bytes(code)])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", [JPEGBaseline8Bit, JPEG2000Lossless])
def test_a_codestream_larger_than_its_header_is_refused_before_decoding(films, tmp_path, syntax):
    # A 1-2 kB film whose codestream claims 65000 x 60000 made the decoder ask for gigabytes
    # (sweep 3, H1): its own frame header is read before any decoder runs.
    film = films["NORMAL"][:64, :64].copy()
    bomb = forged_codestream(tmp_path / "bomb.dcm", film, syntax, (65000, 60000))
    assert bomb.stat().st_size < 8000
    with pytest.raises(ImageError, match="declares 65000x60000 .* header 64x64"):
        readers.read(bomb)
    honest = forged_codestream(tmp_path / "honest.dcm", film, syntax, (64, 64))
    assert readers.read(honest)[0].shape == (64, 64)


def test_the_bomb_is_refused_by_predict_in_one_line_within_a_small_memory_limit(films, tmp_path):
    bomb = forged_codestream(
        tmp_path / "bomb.dcm", films["NORMAL"][:64, :64].copy(), JPEG2000Lossless, (60000, 60000)
    )
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
        "from edgexray.edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    model = ["--model", str(REFERENCE_MODEL)]
    result = subprocess.run(
        [sys.executable, "-c", script, *model, str(bomb)], capture_output=True, text=True
    )
    assert result.returncode == 3, result.stderr
    assert "declares 60000x60000" in json.loads(result.stdout)["error"]
    assert "Traceback" not in result.stderr


def test_voi_lut_function_and_lut_sequences_are_honoured(films, tmp_path):
    film = films["PNEUMONIA"]
    ds = film_dataset(film, bits=12, window=True)
    ds.VOILUTFunction = "SIGMOID"
    ds.WindowCenter, ds.WindowWidth = 2048, 1024
    sigmoid, info = dicom.render(ds, ds.pixel_array)
    expected = 255 / (1 + np.exp(-4 * (ds.pixel_array.astype(float) - 2048) / 1024))
    assert np.abs(sigmoid - expected).max() <= 0.5 + 1e-3
    assert "SIGMOID" in info
    ds.WindowCenter, ds.WindowWidth = [2048, 100], [1024, 50]
    ds.VOILUTFunction = "LINEAR"
    assert "window 1 of 2 (C=2048 W=1024, LINEAR)" in dicom.render(ds, ds.pixel_array)[1]
    for name, step in (("mlut_18.dcm", "modality LUT sequence"), ("vlut_04.dcm", "VOI LUT 1")):
        film_read, info = dicom.read_film(get_testdata_file(name))
        assert step in info["rendering"] and film_read.std() > 10


def test_a_dataset_is_read_as_a_file_is(films):
    ds = secondary_capture(films["NORMAL"])
    film, info = dicom.read_film(ds)
    assert np.array_equal(film, films["NORMAL"]) and info["rendering"].startswith("DICOM 8-bit")


def test_training_and_evaluation_read_dicom_as_the_png(films, tmp_path):
    root = tmp_path / "dicom data"
    for label, film in films.items():
        (root / label).mkdir(parents=True)
        write_film(root / label / f"{label} film.dcm", film, bits=12, monochrome1=True)
        Image.fromarray(film).save(root / label / f"{label} film.png")
    listed = data.list_images(root)
    assert [len(paths) for paths in listed.values()] == [2, 2]
    spec = {"height": 32, "width": 32, "normalization": "equalize"}
    for paths in listed.values():
        dicom_input, png_input = (data.model_input(str(p), spec) for p in paths)
        assert np.array_equal(dicom_input, png_input)  # what tf.data batches for training
    csv_path = tmp_path / "predictions.csv"
    args = ["evaluate", "--model", str(REFERENCE_MODEL), "--data", str(root), "--json"]
    result = runner.invoke(app, [*args, "--predictions", str(csv_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["skipped"] == 0
    rows = csv_path.read_text().splitlines()[1:]
    assert len(rows) == 4 and sum(".dcm," in row for row in rows) == 2
    for label in films:  # each film's DICOM and PNG: one probability
        assert len({row.split(",")[2] for row in rows if f"/{label} film." in row}) == 1


# --- 16-bit PNG: robust window -------------------------------------------------------


def grey_levels(gray: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(gray.ravel(), minlength=256)))


@pytest.mark.parametrize("marker", ["hot pixel", "burned-in marker"])
def test_a_hot_pixel_or_marker_does_not_crush_a_16_bit_png(films, tmp_path, marker):
    film = films["PNEUMONIA"]
    twelve_bit = film.astype(np.uint16) * 16 + 5  # a 12-bit film in a 16-bit PNG
    spoiled = twelve_bit.copy()
    if marker == "hot pixel":
        spoiled[3, 4] = 65535
    else:
        # An "L" marker burned in at full scale: 0.2% of the film, as letters on a film are.
        spoiled[10:15, 10:26] = 65535
    for name, values in (("clean.png", twelve_bit), ("spoiled.png", spoiled)):
        buffer = io.BytesIO()
        Image.fromarray(values).save(buffer, format="PNG")
        (tmp_path / name).write_bytes(buffer.getvalue())
    clean, info = readers.read(tmp_path / "clean.png")
    gray = readers.read(tmp_path / "spoiled.png")[0]
    assert info["rendering"].startswith("16-bit PNG, window p0.5-p99.5")
    # Min-max would leave 4095 / 65535 of the range: about 16 grey levels. The percentile
    # window clips 1% of the pixels, merging some levels in the tails.
    assert grey_levels(clean) >= 0.8 * grey_levels(film)
    assert grey_levels(gray) >= 0.8 * grey_levels(film)
    outside = gray == 255
    assert np.abs(gray[~outside].astype(int) - clean[~outside]).max() <= 2


# --- headers that would mislead: one reason each, never a probability (sweep 3) ------------


def _variant(films, path: Path, edit, **options) -> Path:
    """A film written with film_dataset, then edited, its values written as they are."""
    import warnings

    from pydicom import config as pydicom_config

    dataset = film_dataset(films["PNEUMONIA"], **options)
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the very values under test
        for mode in ("reading_validation_mode", "writing_validation_mode"):
            patch.setattr(pydicom_config.settings, mode, pydicom_config.IGNORE)
        edit(dataset)
        dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda d: setattr(d, "RescaleSlope", "NaN"), "RescaleSlope 'NaN' is not a finite"),
        (lambda d: setattr(d, "RescaleSlope", "inf"), "RescaleSlope 'inf' is not a finite"),
        (lambda d: setattr(d, "RescaleIntercept", "-inf"), "RescaleIntercept '-inf'"),
        (lambda d: setattr(d, "RescaleSlope", "1e300"), "beyond any real range"),
        (lambda d: (setattr(d, "WindowCenter", "NaN"), setattr(d, "WindowWidth", 256)), "window"),
        (lambda d: setattr(d, "PixelData", b""), "pixel data is empty"),
    ],
)
def test_a_header_that_would_blank_the_film_is_refused_with_its_reason(
    films, tmp_path, edit, reason
):
    # Such films once rendered blank, got a probability and a label (sweep 3, L1, L2).
    film = _variant(films, tmp_path / "film.dcm", edit)
    code, (record,) = predict(film)
    assert code == 3 and reason in record["error"] and "probability" not in record


def test_a_frame_count_that_is_no_number_is_named_not_counted_as_minus_one(films, tmp_path):
    film = _variant(films, tmp_path / "frames.dcm", lambda d: setattr(d, "NumberOfFrames", 7))
    raw = film.read_bytes()
    film.write_bytes(raw.replace(b"IS\x02\x007 ", b"IS\x02\x00ab", 1))
    code, (record,) = predict(film)
    assert code == 3 and "NumberOfFrames 'ab' is not a whole number" in record["error"]


def test_a_rescale_slope_of_zero_is_read_as_one_and_says_so(films, tmp_path):
    film = _variant(films, tmp_path / "slope0.dcm", lambda d: setattr(d, "RescaleSlope", 0))
    plain = _variant(films, tmp_path / "plain.dcm", lambda d: None)
    _, (zero,) = predict(film)
    _, (one,) = predict(plain)
    assert "rescale slope 0 read as 1" in zero["rendering"]
    assert zero["probability"] == one["probability"]


def test_what_is_not_a_film_is_named_for_what_it_is(films, tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "random.dcm").write_bytes(np.random.default_rng(0).bytes(5000))
    whole = write_film(tmp_path / "whole.dcm", films["NORMAL"])
    (tmp_path / "cut.dcm").write_bytes(whole.read_bytes()[:400])
    code, records = predict(*(tmp_path / n for n in ("empty.dcm", "random.dcm", "cut.dcm")))
    errors = [r["error"] for r in records]
    assert code == 3
    assert "an empty file" in errors[0]
    assert "not a DICOM file" in errors[1]
    assert "without pixel data (a truncated file?)" in errors[2]


def test_a_dicomdir_given_by_name_is_called_a_media_directory(tmp_path):
    from pydicom.fileset import FileSet

    film = get_testdata_file("CT_small.dcm")
    fileset = FileSet()
    fileset.add(film)
    fileset.write(tmp_path / "export")
    code, (record,) = predict(tmp_path / "export" / "DICOMDIR")
    assert code == 3 and "media directory (DICOMDIR)" in record["error"]


def test_pixel_data_longer_than_its_image_is_refused_not_cut_and_shifted(films, tmp_path):
    from pydicom.encaps import encapsulate

    def wrap(dataset):  # item headers around native pixels: pydicom would trim 20 bytes
        dataset.PixelData = encapsulate([dataset.PixelData])

    film = _variant(films, tmp_path / "encaps.dcm", wrap, bits=8)
    code, (record,) = predict(film)
    assert code == 3 and "the image described by its header needs" in record["error"]


def test_pydicom_says_nothing_on_stderr_and_a_corrupt_codestream_no_traceback(films, tmp_path):
    # Its warnings and its decoders' logged tracebacks reached the screen (sweep 3, M1, L3).
    charset = _variant(
        films, tmp_path / "charset.dcm", lambda d: setattr(d, "SpecificCharacterSet", "BOGUS")
    )
    code = io.BytesIO()
    Image.fromarray(films["NORMAL"]).save(code, format="JPEG2000", no_jp2=True)
    cut = film_dataset(films["NORMAL"], bits=8)
    cut.file_meta.TransferSyntaxUID = JPEG2000Lossless
    from pydicom.encaps import encapsulate

    cut.PixelData = encapsulate([code.getvalue()[: len(code.getvalue()) // 3]])
    cut["PixelData"].VR = "OB"
    cut.save_as(tmp_path / "cut j2k.dcm", enforce_file_format=True)
    args = [sys.executable, "-m", "edgexray.edge_runtime.infer", "--model", str(REFERENCE_MODEL)]
    result = subprocess.run(
        [*args, str(charset), str(tmp_path / "cut j2k.dcm")], capture_output=True, text=True
    )
    assert result.returncode == 3
    assert "WARNING" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert "probability" in records[0] and "cannot be decoded" in records[1]["error"]
