"""Heatmaps and the batch report (outputs/heatmaps.py, report.py) from every entry point.

The report page itself, and heatmaps and reports from `edgexray explain`, `edgexray predict
--report`, infer.py on a device and the rpi watch folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from edge_support import run_blocked
from explain_support import LESION, lesion_film, write_films, write_lesion_model
from PIL import Image
from typer.testing import CliRunner

from edgexray.cli import app
from edgexray.edge_runtime import REFERENCE_MODEL, explain
from edgexray.edge_runtime import batch as edge_batch
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.outputs import report

runner = CliRunner()
SIDECAR = {
    "model_file": "m.tflite",
    "sha256": "ab" * 32,
    "method": "int8",
    "labels": ["NORMAL", "PNEUMONIA"],
    "threshold": 0.3,
    "target_recall": 0.97,
    "edgexray_version": "0.1.0",
}
VOID = {"meta", "img", "br", "hr", "link", "input"}


class TagChecker(HTMLParser):
    """Fails on an end tag that closes anything but the innermost open element."""

    def __init__(self):
        super().__init__()
        self.open, self.sources = [], []

    def handle_starttag(self, tag, attrs):
        self.sources += [value for name, value in attrs if name in ("src", "href")]
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
        self.open.pop()


def parse(page: str) -> TagChecker:
    checker = TagChecker()
    checker.feed(page)
    checker.close()
    assert checker.open == [], checker.open
    return checker


def jpeg() -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(buffer, format="JPEG")
    return buffer.getvalue()


def answer(path: str, probability: float, **extra) -> dict:
    label = "PNEUMONIA" if probability >= 0.3 else "NORMAL"
    return {"path": path, "probability": probability, "label": label, "threshold": 0.3, **extra}


def batch() -> list[report.Entry]:
    return [
        report.Entry(answer("low.png", 0.10), jpeg(), jpeg(), 1.0),
        report.Entry(answer("high.png", 0.95), jpeg(), jpeg(), 2.5),
        report.Entry({"path": "broken.png", "error": "not a JPEG or PNG image"}),
        report.Entry(
            answer(
                "knee.png",
                0.99,
                in_scope=False,
                scope_reason="not a chest film",
                label="OUT_OF_SCOPE",
            ),
            jpeg(),
            jpeg(),
            1.0,
        ),
        report.Entry(answer("middle.png", 0.50, in_scope=True), jpeg(), jpeg(), 1.0),
        report.Entry(answer("blank.png", 0.80, quality_warning="flat or blank image")),
        report.Entry(answer("edge.png", 0.29), jpeg(), jpeg(), 1.0),
    ]


def test_report_is_self_contained_html_sorted_for_reading():
    page = report.render(batch(), SIDECAR, "/models/m.tflite")
    checker = parse(page)
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()
    assert checker.sources and all(
        s.startswith("data:image/jpeg;base64,") or s.startswith("#") for s in checker.sources
    )
    order = [
        page.index(f"{name}.png</h3>")
        for name in ("high", "middle", "knee", "blank", "broken", "edge", "low")
    ]
    # Above the threshold most probable first; then every film without an answer; then
    # the rest, most probable first. Nothing is left out.
    assert order[:2] == sorted(order[:2]) and max(order[:2]) < min(order[2:5])
    assert max(order[2:5]) < order[5] < order[6]
    assert page.count(report.DISCLAIMER) == 2
    assert "out of scope: not a chest film" in page and "in scope: <b>NO</b>" in page
    assert "could not be read: not a JPEG or PNG image" in page
    assert "image quality: flat or blank image" in page
    assert "abababababab…" in page and "m.tflite (int8)" in page
    assert "not calibrated at this site" in page


def test_report_says_where_a_calibrated_threshold_came_from():
    calibration = {
        "method": "neyman-pearson",
        "guarantee": True,
        "target_recall": 0.97,
        "confidence": 0.95,
        "source_threshold": 0.22,
        "calibrated_at": "2026-11-01",
        "sample": {
            "n": 312,
            "pneumonia": 195,
            "normal": 117,
            "folder": "/site",
            "files_sha256": "cd" * 32,
        },
        "recall_lower_bound": 0.9759,
        "expected_specificity": 0.70,
        "expected_specificity_ci": [0.61, 0.78],
        "interval": "Wilson",
    }
    page = report.render(batch(), {**SIDECAR, "calibration": calibration}, "m.tflite")
    parse(page)
    assert "calibrated at a site on 2026-11-01" in page and "on 312 local films" in page
    assert "pneumonia recall &gt;= 0.97 with 95% confidence" in page and "0.9759" in page


def test_report_escapes_what_a_file_name_could_inject():
    entry = report.Entry(answer('<img src="https://x.example/a.png">.png', 0.9))
    page = report.render([entry], SIDECAR, "m.tflite")
    parse(page)
    assert "https://" not in page.replace("&quot;https://x.example", "")
    assert '<img src="https' not in page


def test_report_writes_out_the_characters_that_make_a_name_read_as_another():
    # U+202E would show "rtl\u202egnp.jpeg" as "rtlgepj.png"; a patient name can carry it too.
    record = answer("rtl\u202egnp.jpeg", 0.9) | {"patient_name": "Doe\u2067^Jane"}
    page = report.render([report.Entry(record)], SIDECAR, "m.tflite")
    assert not any(c in page for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u200e\u200f")
    assert "rtl&lt;U+202E&gt;gnp.jpeg" in page


def _chromium() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not on PATH (apt-get install chromium)")
    return chromium


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_a_very_long_film_name_wraps_inside_the_page(tmp_path):
    chromium = _chromium()
    long_name = "x" * 245 + ".png"
    page = report.render([report.Entry(answer(long_name, 0.9))], SIDECAR, "m.tflite")
    # The page's own width as Chromium laid it out, read back through the title.
    probe = "<script>document.title = 'width ' + document.documentElement.scrollWidth</script>"
    path = tmp_path / "long.html"
    path.write_text(page.replace("</body>", probe + "</body>"))
    dom = _headless(
        chromium, tmp_path / "profile", "--window-size=800,600", "--dump-dom", path.as_uri()
    ).stdout
    width = int(dom.split("<title>width ", 1)[1].split("<", 1)[0])
    assert width <= 800


@pytest.fixture(scope="module")
def lesion_model(tmp_path_factory) -> Path:
    return write_lesion_model(tmp_path_factory.mktemp("report") / "lesion model")


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> Path:
    return write_films(tmp_path_factory.mktemp("report") / "ward films")


def records_of(output: str) -> dict[str, dict]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return {Path(record["path"]).name: record for record in lines}


def test_explain_command_writes_overlays_and_maps(tmp_path, lesion_model, films):
    out = tmp_path / "heat maps"
    result = runner.invoke(
        app, ["explain", "--model", str(lesion_model), str(films), "--out", str(out)]
    )
    assert result.exit_code == 3, result.output  # notes.png is not an image
    records = records_of(result.output)
    assert "error" in records["notes.png"] and "overlay" not in records["notes.png"]
    for name in ("lesion film.png", "clear film.png", "blank.png"):
        overlay, heatmap = Path(records[name]["overlay"]), Path(records[name]["heatmap"])
        assert overlay == out / f"{name}.heatmap.png" and Image.open(overlay).format == "PNG"
        assert np.load(heatmap).shape == (32, 32)
    lesion = np.load(records["lesion film.png"]["heatmap"])
    assert lesion.max() > np.load(records["clear film.png"]["heatmap"]).max()


def test_explain_command_defaults_to_the_reference_model(tmp_path, films):
    out = tmp_path / "maps"
    result = runner.invoke(app, ["explain", str(films / "lesion film.png"), "--out", str(out)])
    # The drawn lesion makes the film unlike the training films: out of scope (exit 4), and
    # its heatmap is written all the same.
    assert result.exit_code == 4, result.output
    assert np.load(out / "lesion film.png.heatmap.npy").shape == (128, 128)


def test_explain_command_takes_a_finer_grid(tmp_path, lesion_model, films):
    out = tmp_path / "fine"
    film = films / "lesion film.png"
    args = ["explain", "--model", str(lesion_model), str(film), "--out", str(out), "--grid", "8/4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    saliency = np.load(out / "lesion film.png.heatmap.npy")
    row, column = np.unravel_index(np.argmax(saliency), saliency.shape)
    assert LESION[0].start <= row < LESION[0].stop and LESION[1].start <= column < LESION[1].stop


@pytest.mark.parametrize(
    "grid, says",
    [
        ("8/16", "larger than the patch"),
        ("40/8", "larger than the input"),
        ("8x4", "PATCH/STRIDE"),
        ("\u00b2/1", "PATCH/STRIDE"),  # a superscript two is a digit int() refuses (sweep 3, M3)
    ],
)
def test_explain_command_refuses_a_bad_grid_in_one_line(tmp_path, lesion_model, films, grid, says):
    out = tmp_path / "maps"
    args = ["explain", "--model", str(lesion_model), str(films), "--out", str(out), "--grid", grid]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
    assert says in result.output and not out.exists()


def test_the_grid_help_names_the_default_grid():
    grid = explain.default_grid(128, 128)  # the reference model's input
    passes = f"{grid.passes(128, 128)} model runs"
    for helps in (runner.invoke(app, ["explain", "--help"]).output, infer_help()):
        flat = " ".join(helps.split())
        assert f"{grid.patch}/{grid.stride}" in flat and passes in flat
    large = explain.default_grid(224, 224)
    assert f"{large.patch}/{large.stride} for 224 px" in " ".join(infer_help().split())


def test_default_grid_is_a_share_of_the_input():
    assert explain.default_grid(128, 128) == explain.Grid(32, 24)  # as before it scaled
    assert explain.default_grid(224, 224) == explain.Grid(56, 42)
    for side in (96, 128, 160, 224, 256):  # any multiple of 16: 5 x 5 positions
        assert explain.default_grid(side, side).passes(side, side) == 26


def infer_help() -> str:
    result = subprocess.run(
        [sys.executable, "-m", "edgexray.edge_runtime.infer", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_explain_command_without_films_is_one_line_error(tmp_path, lesion_model):
    result = runner.invoke(app, ["explain", "--model", str(lesion_model), "--out", str(tmp_path)])
    assert result.exit_code == 2 and result.output.count("error:") == 1


def test_predict_report_lists_every_film(tmp_path, lesion_model, films):
    page_path = tmp_path / "ward report.html"
    result = runner.invoke(
        app, ["predict", "--model", str(lesion_model), str(films), "--report", str(page_path)]
    )
    assert result.exit_code == 3, result.output
    assert "overlay" not in result.output  # --report alone writes no heatmap files
    page = page_path.read_text()
    parse(page)
    for name in ("lesion film.png", "clear film.png", "blank.png", "notes.png"):
        assert f"{name}</h3>" in page
    assert page.index("lesion film.png</h3>") < page.index("clear film.png</h3>")
    assert page.count("data:image/jpeg;base64,") == 6  # film and overlay of three films
    assert "lesion int8.tflite (int8)" in page


def _card_films(page: str) -> list[tuple[float, np.ndarray]]:
    """(probability shown, film picture) of each card of a report."""
    import base64
    import re
    from io import BytesIO

    cards = []
    for card in page.split('<section class="film')[1:]:
        probability = float(re.search(r'aria-label="probability ([0-9.]+)', card).group(1))
        picture = re.search(r'alt="film" src="data:image/jpeg;base64,([^"]+)"', card).group(1)
        with Image.open(BytesIO(base64.b64decode(picture))) as image:
            cards.append((probability, np.asarray(image.convert("L"), dtype=float)))
    return cards


def test_every_card_and_heatmap_shows_the_film_that_was_classified(tmp_path, lesion_model):
    # A Latin-1 file name (not UTF-8) is escaped in its record: film\xe9.png. A second file
    # literally named so sits beside it. Cards and heatmaps once re-opened films by that
    # escaped name, and showed the second film for the first (sweep 3, H3).
    folder = tmp_path / "export"
    folder.mkdir()
    lesion, clear = lesion_film(0), lesion_film(1, lesion=False)
    Image.fromarray(lesion).save(os.fsdecode(os.fsencode(folder) + b"/film\xe9.png"))
    Image.fromarray(clear).save(folder / "film\\xe9.png")
    out, page_path = tmp_path / "maps", tmp_path / "report.html"
    args = [
        "explain",
        "--model",
        str(lesion_model),
        str(folder),
        "--out",
        str(out),
        "--grid",
        "8/4",
    ]
    result = runner.invoke(app, [*args, "--report", str(page_path)])
    assert result.exit_code == 0, result.output
    found = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["path"] for r in found] == [str(folder / "film\\xe9.png")] * 2
    classifier = Classifier(lesion_model)
    maps = {
        name: explain.explain_gray(classifier, film, explain.Grid(8, 4))
        for name, film in (("lesion", lesion), ("clear", clear))
    }
    assert maps["lesion"].probability > maps["clear"].probability
    for record in found:  # each record's own film, known by its probability
        (own,) = [m for m in maps.values() if m.probability == record["probability"]]
        assert np.array_equal(np.load(record["heatmap"]), own.saliency)
    assert len({r["overlay"] for r in found}) == 2
    films = {
        round(maps[n].probability, 3): film for n, film in (("lesion", lesion), ("clear", clear))
    }
    cards = _card_films(page_path.read_text())
    assert len(cards) == 2
    for probability, picture in cards:
        size = Image.fromarray(picture.astype(np.uint8)).size
        distance = {
            shown: np.abs(picture - np.asarray(Image.fromarray(film).resize(size), float)).mean()
            for shown, film in films.items()
        }
        assert min(distance, key=distance.get) == probability, distance


def test_a_film_name_as_long_as_the_file_system_allows_is_explained(tmp_path, lesion_model):
    folder = tmp_path / "long"
    folder.mkdir()
    long_name = "L" * 245 + ".png"
    Image.fromarray(lesion_film(0)).save(folder / long_name)
    Image.fromarray(lesion_film(1, lesion=False)).save(folder / "zz.png")
    out, page_path = tmp_path / "maps", tmp_path / "report.html"
    args = ["explain", "--model", str(lesion_model), str(folder), "--out", str(out), "--report"]
    result = runner.invoke(app, [*args, str(page_path)])
    assert result.exit_code == 0, result.output  # sweep 3, M2: the batch once stopped here
    found = records_of(result.output)
    assert set(found) == {long_name, "zz.png"} and page_path.is_file()
    assert all(Path(found[name]["overlay"]).is_file() for name in found)


def test_predict_report_never_overwrites_a_file(tmp_path, lesion_model, films):
    page_path = tmp_path / "report.html"
    page_path.write_text("a user's page")
    result = runner.invoke(
        app, ["predict", "--model", str(lesion_model), str(films), "--report", str(page_path)]
    )
    assert result.exit_code == 2 and "exists" in result.output
    assert page_path.read_text() == "a user's page"


def test_device_explains_and_reports_without_tensorflow(tmp_path, lesion_model, films):
    from edgexray.export.bundle import write_runtime

    device = tmp_path / "edge device"
    launcher = write_runtime(device)  # edge_runtime/ and infer.py, as a bundle holds them
    for suffix in (".tflite", ".json"):
        shutil.copyfile(lesion_model.with_suffix(suffix), device / f"model{suffix}")
    args = [
        sys.executable,
        str(launcher),
        "--model",
        "model.tflite",
        str(films),
        "--explain",
        "heat maps",
        "--report",
        "batch report.html",
    ]
    result = run_blocked(args, tmp_path, cwd=device)
    assert result.returncode == 3, result.stderr
    records = records_of(result.stdout)
    assert (device / records["lesion film.png"]["overlay"]).is_file()
    assert np.load(device / records["blank.png"]["heatmap"]).shape == (32, 32)
    page = (device / "batch report.html").read_text()
    parse(page)
    assert "notes.png</h3>" in page and report.DISCLAIMER in page


def test_infer_copied_alone_says_it_needs_its_package(tmp_path, films):
    from edgexray.edge_runtime import infer

    alone = tmp_path / "infer alone"
    alone.mkdir()
    shutil.copyfile(infer.__file__, alone / "infer.py")
    result = run_blocked(
        [
            sys.executable,
            str(alone / "infer.py"),
            "--model",
            str(REFERENCE_MODEL),
            str(films),
            "--explain",
            str(tmp_path / "maps"),
        ],
        tmp_path,
    )
    assert result.returncode == 2 and "edge_runtime package" in result.stderr


def test_chromium_renders_the_report(tmp_path, lesion_model, films):
    chromium = _chromium()
    page_path = tmp_path / "report page.html"
    edge_batch.run(
        lesion_model, [films], stream=open(tmp_path / "records.jsonl", "w"), report_path=page_path
    )
    shot = tmp_path / "shot.png"
    _headless(
        chromium,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1000,1400",
        page_path.as_uri(),
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1400, 1000)
    # Not blank: text, the red disclaimer frame and the films make many colours.
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    reds = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    assert reds.sum() > 500  # the disclaimer's frame and the probability bars


def test_watch_folder_writes_heatmaps_and_a_report_when_asked(tmp_path, lesion_model, films):
    from edge_support import make_venv

    from edgexray.export.bundle import BundleConfig, make_bundle

    home = tmp_path / "pi home"
    bundle = home / "edgexray"
    make_bundle(BundleConfig(str(lesion_model), "rpi", str(bundle)))
    make_venv(bundle)
    inbox = home / "inbox"
    shutil.copytree(films, inbox)
    for film in inbox.iterdir():
        os.utime(film, (time.time() - 60, time.time() - 60))
    results = home / "results.jsonl"
    folders = [str(inbox), str(home / "done"), str(results)]
    watch = run_blocked(
        ["sh", str(bundle / "watch-folder.sh"), *folders],
        tmp_path,
        env={"ONCE": "1", "EXPLAIN": "1"},
    )
    assert watch.returncode == 0, watch.stderr
    records = records_of(results.read_text())
    assert sorted(records) == ["blank.png", "clear film.png", "lesion film.png", "notes.png"]
    heatmaps = Path(records["lesion film.png"]["overlay"]).parent
    assert heatmaps.parent == home / "done" and heatmaps.name.endswith(".heatmaps")
    assert all(Path(records[name]["heatmap"]).is_file() for name in ("blank.png", "clear film.png"))
    assert "lesion film.png</h3>" in (heatmaps / "report.html").read_text()
