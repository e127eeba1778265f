"""The android bundle's Java preprocessing, compiled and run here: byte-identical to infer.py.

The Java class gets the pixels as Bitmap.getPixels would give them (ARGB ints, not rotated)
and the EXIF orientation; infer.py gets the file. Real films are cropped, resized to many
sizes and saved in the formats a phone meets (grey and colour JPEG, PNG with transparency,
JPEG with every EXIF orientation). All images go through one JVM start.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_TRAIN
from PIL import Image

from edgexray.edge_runtime import REFERENCE_MODEL as SHIPPED_MODEL
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.interpreter import input_batch
from edgexray.edge_runtime.preprocess import preprocess
from edgexray.edge_runtime.sidecar import load_sidecar
from edgexray.export import bundle as bundle_module
from edgexray.export.bundle import BundleConfig, make_bundle

DRIVER = Path(__file__).parent / "java" / "PreprocessBatch.java"
ORIENTATION = 0x0112
# (width, height): shrinking by up to 9x, growing, one axis only, and extreme shapes.
SIZES = [
    (1000, 1400),
    (301, 517),
    (2000, 1600),
    (224, 224),
    (128, 128),
    (517, 301),
    (97, 1203),
    (1400, 1000),
    (640, 480),
    (129, 127),
    (64, 48),
    (1203, 97),
    (128, 900),
    (333, 128),
]
FORMATS = ("grey png", "grey jpeg", "colour jpeg", "transparent png", "exif jpeg")


@pytest.fixture(scope="module")
def java_preprocess(tmp_path_factory):
    """A function running EdgexrayPreprocess.modelInput on many cases in one JVM."""
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK (javac/java) on this machine")
    folder = tmp_path_factory.mktemp("java")
    source = Path(bundle_module.__file__).parent / "android" / "EdgexrayPreprocess.java"
    subprocess.run(
        ["javac", "-J-Xmx512m", "-d", str(folder / "classes"), str(source), str(DRIVER)],
        check=True,
        capture_output=True,
        timeout=120,
    )

    def run(cases: list[dict]) -> list[bytes]:
        lines = []
        for i, case in enumerate(cases):
            argb, orientation = bitmap_pixels(case["path"])
            pixels = folder / f"{i}.argb"
            pixels.write_bytes(argb.astype("<u4").tobytes())
            fields = [
                pixels,
                argb.shape[1],
                argb.shape[0],
                orientation,
                case["height"],
                case["width"],
                case["normalization"],
                repr(float(case["scale"])),
                case["zero_point"],
                folder / f"{i}.input",
            ]
            lines.append("\t".join(map(str, fields)))
        (folder / "manifest.tsv").write_text("\n".join(lines) + "\n")
        # A small serial-GC heap: the default one reserves a quarter of the RAM and a GC
        # thread per core, which fails on a busy 2-core machine.
        jvm = ["-Xmx512m", "-XX:+UseSerialGC", f"-XX:ErrorFile={folder}/hs_err_%p.log"]
        command = ["java", *jvm, "-cp", str(folder / "classes"), "PreprocessBatch"]
        subprocess.run(
            [*command, str(folder / "manifest.tsv")], check=True, capture_output=True, timeout=300
        )
        return [(folder / f"{i}.input").read_bytes() for i in range(len(cases))]

    return run


def bitmap_pixels(path: Path) -> tuple[np.ndarray, int]:
    """What an app has after decoding: ARGB ints as stored (not yet rotated), and the
    EXIF orientation tag."""
    with Image.open(path) as image:
        orientation = int(image.getexif().get(ORIENTATION, 1))
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint32)
    argb = (rgba[..., 3] << 24) | (rgba[..., 0] << 16) | (rgba[..., 1] << 8) | rgba[..., 2]
    return argb, orientation


def infer_input(case: dict) -> bytes:
    """The bytes infer.py feeds the interpreter for this case."""
    spec = {"height": case["height"], "width": case["width"]}
    spec["normalization"] = case["normalization"]
    detail = {"quantization": (case["scale"], case["zero_point"]), "dtype": np.uint8}
    return input_batch(preprocess(case["path"], spec), detail).tobytes()


def varied_films(folder: Path, count: int) -> list[Path]:
    """count real films, each cropped, resized to one of SIZES and saved in one of FORMATS."""
    sources = [sorted((SHARED_TRAIN / label).iterdir()) for label in ("NORMAL", "PNEUMONIA")]
    rng = np.random.default_rng(13)
    folder.mkdir()
    paths = []
    for i in range(count):
        with Image.open(sources[i % 2][i // 2]) as film:
            film = film.convert("L")
            left, top = rng.integers(0, film.width // 4, 2)
            film = film.crop((left, top, film.width - rng.integers(0, 30), film.height))
        film = film.resize(SIZES[i % len(SIZES)], Image.Resampling.LANCZOS)
        kind = FORMATS[i % len(FORMATS)]
        path = folder / f"film {i:02d} {kind}.{'png' if 'png' in kind else 'jpeg'}"
        if kind == "colour jpeg":  # a film photographed or scanned in colour
            r, g, b = (film.point(lambda v, s=s: min(255, int(v * s))) for s in (1.0, 0.9, 0.8))
            Image.merge("RGB", (r, g, b)).save(path, quality=90)
        elif kind == "transparent png":
            alpha = np.linspace(0, 255, film.width * film.height).reshape(film.height, -1)
            film.putalpha(Image.fromarray(alpha.astype(np.uint8)))
            film.save(path)
        elif kind == "exif jpeg":
            exif = Image.Exif()
            exif[ORIENTATION] = 2 + (i // len(FORMATS)) % 7  # every orientation 2..8
            film.save(path, quality=90, exif=exif)
        else:
            film.save(path, **({"quality": 90} if kind == "grey jpeg" else {}))
        paths.append(path)
    return paths


def test_java_gives_the_bundle_check_input_of_the_shipped_model(java_preprocess, tmp_path):
    config = BundleConfig(str(SHIPPED_MODEL), "android", str(tmp_path / "bundle"))
    device = Path(make_bundle(config)["path"])
    assert (device / "EdgexrayPreprocess.java").read_bytes() == (
        Path(bundle_module.__file__).parent / "android" / "EdgexrayPreprocess.java"
    ).read_bytes()
    classifier = Classifier(device / SHIPPED_MODEL.name)
    spec = classifier.sidecar["input"]
    scale, zero_point = classifier.interpreter.get_input_details()[0]["quantization"]
    case = {
        "path": device / "check" / "image.png",
        "height": spec["height"],
        "width": spec["width"],
        "normalization": spec["normalization"],
        "scale": scale,
        "zero_point": zero_point,
    }
    (port,) = java_preprocess([case])
    assert port == (device / "check" / "input.u8").read_bytes() == infer_input(case)


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="needs the shared chest X-ray films")
def test_java_is_byte_identical_to_infer_on_60_films_of_varied_sizes(java_preprocess, tmp_path):
    sidecar = load_sidecar(SHIPPED_MODEL)
    spec = sidecar["input"]
    quantization = sidecar["input"]["quantization"]
    cases = [
        {
            "path": path,
            "height": spec["height"],
            "width": spec["width"],
            "normalization": spec["normalization"],
            "scale": quantization["scale"],
            "zero_point": quantization["zero_point"],
        }
        for path in varied_films(tmp_path / "films", 60)
    ]
    # Other model inputs: another resolution (growing small films), no equalisation, and a
    # quantization where q differs from the grey level.
    for case, (height, width, normalization, scale, zero_point) in zip(
        cases[:4],
        [
            (300, 200, "equalize", 1 / 255, 0),
            (64, 96, "scale", 1 / 255, 0),
            (128, 128, "equalize", 0.0078125, 128),
            (31, 17, "scale", 0.01, 3),
        ],
        strict=True,
    ):
        cases.append(
            {
                **case,
                "height": height,
                "width": width,
                "normalization": normalization,
                "scale": scale,
                "zero_point": zero_point,
            }
        )
    ports = java_preprocess(cases)
    mismatched = [c["path"].name for c, p in zip(cases, ports, strict=True) if p != infer_input(c)]
    assert mismatched == []
    assert {Image.open(c["path"]).size for c in cases} >= set(SIZES)


def test_java_matches_pillow_on_every_alpha_and_colour(java_preprocess, tmp_path):
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (64, 256, 4), dtype=np.uint8)
    rgba[:, :, 3] = np.arange(256)  # every alpha level, on random colours
    path = tmp_path / "all alphas.png"
    Image.fromarray(rgba, "RGBA").save(path)
    case = {
        "path": path,
        "height": 64,
        "width": 256,
        "normalization": "scale",
        "scale": 1 / 255,
        "zero_point": 0,
    }
    assert java_preprocess([case]) == [infer_input(case)]
