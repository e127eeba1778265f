"""The android bundle's Java scope guard, compiled and run here: the same decisions as scope.py.

EdgexrayScope.java gets what an app has: the ARGB pixels as stored, the EXIF orientation,
the sidecar's text and the model's int8 features bytes for the image; infer.py gets the
file. Real films, a negative, photographs (colour and grey, one EXIF-rotated), a tinted
film, a transparent PNG and a blank image go through one JVM start, with the shipped
model's scope/1 block and with a scope/2 block (leading components and one residual
variance, the form wide feature outputs get).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_TRAIN
from PIL import Image
from test_android_preprocess import ORIENTATION, bitmap_pixels

from edgexray import artifacts
from edgexray.edge_runtime import REFERENCE_MODEL, readers
from edgexray.edge_runtime import scope as guard
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.preprocess import resize
from edgexray.export import bundle as bundle_module
from edgexray.pipeline import scope as fitting

DRIVERS = Path(__file__).parent / "java"
FILMS = ("NORMAL/IM-0125-0001.jpeg", "PNEUMONIA/person1003_bacteria_2934.jpeg")
TURNED_FILM = "PNEUMONIA/person1005_virus_1688.jpeg"


@pytest.fixture(scope="module")
def java_scope(tmp_path_factory):
    """A function running EdgexrayScope.decide on many images in one JVM."""
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("no JDK (javac/java) on this machine")
    folder = tmp_path_factory.mktemp("java scope")
    android = Path(bundle_module.__file__).parent / "android"
    sources = [android / "EdgexrayScope.java", android / "EdgexrayPreprocess.java"]
    subprocess.run(
        [
            "javac",
            "-J-Xmx512m",
            "-d",
            str(folder / "classes"),
            *map(str, sources),
            str(DRIVERS / "ScopeBatch.java"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )

    def run(cases: list[dict], sidecar: Path) -> list[tuple[bool, float, str]]:
        lines = []
        for i, case in enumerate(cases):
            argb, orientation = bitmap_pixels(case["path"])
            pixels = folder / f"{i}.argb"
            pixels.write_bytes(argb.astype("<u4").tobytes())
            features = folder / f"{i}.features"
            features.write_bytes(case["features"])
            turned = folder / f"{i} turned"
            turned.mkdir(exist_ok=True)
            for name, (gray, features_bytes) in case["turned"].items():
                (turned / f"{name}.gray").write_bytes(gray.tobytes())
                (turned / f"{name}.features").write_bytes(features_bytes)
            fields = [
                pixels,
                argb.shape[1],
                argb.shape[0],
                orientation,
                128,
                128,
                features,
                repr(float(case["scale"])),
                case["zero_point"],
                turned,
            ]
            lines.append("\t".join(map(str, fields)))
        (folder / "manifest.tsv").write_text("\n".join(lines) + "\n")
        jvm = ["-Xmx512m", "-XX:+UseSerialGC", f"-XX:ErrorFile={folder}/hs_err_%p.log"]
        command = ["java", *jvm, "-cp", str(folder / "classes"), "ScopeBatch"]
        out = folder / "decisions.tsv"
        subprocess.run(
            [*command, str(sidecar), str(folder / "manifest.tsv"), str(out)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        rows = [line.split("\t") for line in out.read_text().splitlines()]
        return [(inside == "true", float(distance), reason) for inside, distance, reason in rows]

    run.classes = folder / "classes"
    return run


def images(folder: Path) -> list[Path]:
    """Films and not-films, as files an app could be given."""
    import skimage

    folder.mkdir()
    paths = []
    for name in FILMS:
        target = folder / Path(name).name
        shutil.copy(SHARED_TRAIN / name, target)
        paths.append(target)
    film = Image.open(paths[0]).convert("L")
    Image.fromarray(255 - np.asarray(film)).save(folder / "negative film.png")
    r, g, b = (film.point(lambda v, s=s: min(255, int(v * s))) for s in (1.0, 0.9, 0.8))
    Image.merge("RGB", (r, g, b)).save(folder / "tinted film.jpeg", quality=90)
    see_through = film.resize((301, 517))
    see_through.putalpha(Image.new("L", see_through.size, 200))
    see_through.save(folder / "transparent film.png")
    Image.new("L", (200, 180), 30).save(folder / "blank.png")
    # A film that turned comes within the cut-off: the orientation check must catch it.
    upright = Image.open(SHARED_TRAIN / TURNED_FILM).convert("L")
    upright.transpose(Image.Transpose.ROTATE_180).save(folder / "upside down film.png")
    upright.transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(folder / "flipped film.png")
    data = Path(skimage.__file__).parent / "data"
    for name in ("chelsea.png", "camera.png", "astronaut.png", "coffee.png"):
        shutil.copy(data / name, folder / name)
    with Image.open(data / "rocket.jpg") as rocket:  # an odd size, EXIF-rotated
        exif = Image.Exif()
        exif[ORIENTATION] = 6
        rocket.resize((517, 301)).save(folder / "rotated rocket.jpeg", quality=90, exif=exif)
    return sorted(folder.iterdir())


def subspace_model(folder: Path) -> Path:
    """The shipped model beside a sidecar whose scope block is scope/2: fitted on features
    drawn from the shipped block's own Gaussian (mean, covariance (W^T W)^-1), 16
    components kept, so real films fall within the cut-off and unlike images outside."""
    folder.mkdir()
    model = folder / "subspace.tflite"
    shutil.copy(REFERENCE_MODEL, model)
    sidecar = json.loads(REFERENCE_MODEL.with_suffix(".json").read_text())
    block = sidecar["scope"]
    whitening = np.asarray(block["whitening"])
    covariance = np.linalg.inv(whitening.T @ whitening)
    rng = np.random.default_rng(34)
    train, val = (rng.multivariate_normal(block["mean"], covariance, n) for n in (600, 200))
    sidecar["scope"] = fitting.fit(train, val, block["feature_output"], components=16)
    artifacts.write_model(model, model.read_bytes(), sidecar)
    return model


def negative_checked_model(folder: Path, negative: Path) -> Path:
    """The shipped model with every turn checked and its cut-off widened until `negative`
    lies within it, so the negative check, not the cut-off, must refuse it."""
    folder.mkdir()
    model = folder / "negative checked.tflite"
    shutil.copy(REFERENCE_MODEL, model)
    classifier = Classifier(model)
    classifier.run(classifier.tensor_of(resize(readers.read(negative)[0], 128, 128)))
    block = classifier.sidecar["scope"]
    block["cutoff"] = guard.Statistics.of(block).distance(classifier.features()) * 1.05
    block["orientation"] = {"turns": [turn.name for turn in guard.TURNS], "margin": 0.0}
    artifacts.write_model(model, model.read_bytes(), classifier.sidecar)
    return model


@pytest.mark.parametrize("form", ["scope/1 (shipped)", "scope/2", "scope/1 (negative check)"])
def test_java_scope_matches_python(java_scope, tmp_path, form):
    app_images = images(tmp_path / "app images")
    model = REFERENCE_MODEL
    if form == "scope/2":
        model = subspace_model(tmp_path / "subspace model")
    if form.endswith("(negative check)"):
        negative = next(path for path in app_images if path.name == "negative film.png")
        model = negative_checked_model(tmp_path / "negative model", negative)
    classifier = Classifier(model)
    assert classifier.scope["schema"] == "edgexray." + form.split()[0]
    feature_detail = classifier.outputs[classifier.scope["feature_output"]["index"]]
    scale, zero_point = feature_detail["quantization"]
    cases, expected = [], []
    for path in app_images:
        film, info = readers.read(path)
        gray = resize(film, 128, 128)
        classifier.run(classifier.tensor_of(gray))
        raw = classifier.interpreter.get_tensor(feature_detail["index"]).tobytes()
        expected.append(classifier.scope_decision(gray, info))  # on this film's own run
        turned = {}
        for turn in guard.TURNS:
            classifier.run(classifier.tensor_of(turn.apply(gray)))
            turned[turn.name] = (
                turn.apply(gray),
                classifier.interpreter.get_tensor(feature_detail["index"]).tobytes(),
            )
        cases.append(
            {
                "path": path,
                "features": raw,
                "scale": scale,
                "zero_point": zero_point,
                "turned": turned,
            }
        )
    got = java_scope(cases, model.with_suffix(".json"))
    kinds = {decision.reason.split(" (")[0] for decision in expected}
    assert {"in scope", "colour image", "flat or blank image"} <= kinds  # every check ran
    if not form.endswith("(negative check)"):  # its cut-off lets in the grey photograph
        assert "unlike the training films" in kinds
    if form.startswith("scope/1"):  # the shipped block has the orientation check
        assert any(kind.startswith("looks upside down") for kind in kinds), kinds
    if form.endswith("(negative check)"):
        assert any(kind.startswith("looks a negative") for kind in kinds), kinds
    for case, want, (inside, distance, reason) in zip(cases, expected, got, strict=True):
        name = case["path"].name
        assert inside == want.in_scope, (name, reason, want.reason)
        assert distance == pytest.approx(want.distance, rel=1e-12), name
        assert reason.split(" (")[0] == want.reason.split(" (")[0], name


def test_android_bundle_ships_the_scope_guard(tmp_path):
    from edgexray.export.bundle import BundleConfig, make_bundle

    out = tmp_path / "android bundle"
    make_bundle(BundleConfig(str(REFERENCE_MODEL), "android", str(out)))
    shipped = Path(bundle_module.__file__).parent / "android" / "EdgexrayScope.java"
    assert (out / "EdgexrayScope.java").read_bytes() == shipped.read_bytes()
    readme = (out / "README.md").read_text()
    assert "EdgexrayScope.fromSidecar(" in readme and "scope.decide(" in readme
    assert "pooled features as output 1; the cut-off is 14.0109" in readme
    assert "{{" not in readme


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda b: b.update(whitening=[[0.0] * len(b["mean"])] * len(b["mean"])), "singular"),
        (lambda b: b.update(cutoff=1e308), "no bound"),
        (lambda b: b.update(orientation={"turns": ["sideways"], "margin": 1}), "unknown turn"),
    ],
)
def test_java_refuses_the_blocks_python_refuses(java_scope, tmp_path, breakage, message):
    # A block that would turn the guard off is refused on the phone too (sweep 3, L5).
    sidecar = json.loads(REFERENCE_MODEL.with_suffix(".json").read_text())
    breakage(sidecar["scope"])
    assert guard.problem(sidecar["scope"]) is not None
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(sidecar))
    (tmp_path / "none.tsv").write_text("")
    command = ["java", "-Xmx256m", "-cp", str(java_scope.classes), "ScopeBatch"]
    result = subprocess.run(
        [*command, str(path), str(tmp_path / "none.tsv"), str(tmp_path / "out.tsv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and message in result.stderr
