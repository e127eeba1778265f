"""Shared fixtures: tiny synthetic X-ray folders, a tiny trained run and its .tflite files.

Everything here is small (32 px, a few dozen images) so the default test run stays fast.
Paths deliberately contain spaces.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]  # the checkout: edgexray/, benchmarks/, tests/
SHARED_DATA = REPO.parent / "shared/data/chest_xray"
SHARED_TRAIN = SHARED_DATA / "train"
SHARED_TEST = SHARED_TRAIN.parent / "test"


def synthetic_xray(rng: np.random.Generator, pneumonia: bool, size=(40, 48)) -> Image.Image:
    """A fake film: a smooth gradient, plus bright blotches ("opacities") when pneumonia."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width]
    image = 60 + 80 * np.sin(np.pi * x / width) + rng.normal(0, 8, size)
    if pneumonia:
        for _ in range(3):
            cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
            image += 90 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * (width / 8) ** 2))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L")


def make_xray_folder(
    root: Path, per_class: int = 40, seed: int = 0, first_patient: int = 0
) -> Path:
    """NORMAL/ and PNEUMONIA/ with Kaggle-style names: 2 images per patient."""
    rng = np.random.default_rng(seed)
    for label in ("NORMAL", "PNEUMONIA"):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            patient = first_patient + i // 2
            if label == "NORMAL":
                name = f"IM-{patient:04d}-{i % 2 + 1:04d}.jpeg"
            else:
                name = f"person{patient}_bacteria_{i}.jpeg"
            synthetic_xray(rng, label == "PNEUMONIA").save(folder / name, quality=95)
    return root


@pytest.fixture(scope="session", autouse=True)
def private_decode_cache(tmp_path_factory):
    """Tests decode through a cache of their own, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEXRAY_CACHE", str(tmp_path_factory.mktemp("decode cache")))
        yield


@pytest.fixture(scope="session")
def xray_folder(tmp_path_factory) -> Path:
    return make_xray_folder(tmp_path_factory.mktemp("data") / "chest x ray")


@pytest.fixture(scope="session")
def tiny_config(xray_folder):
    from edgexray.pipeline.train import TrainConfig

    return TrainConfig(
        data=str(xray_folder),
        image_size=32,
        width=4,
        epochs=3,
        batch_size=16,
        val_fraction=0.25,
        test_fraction=0.25,
        seed=1,
    )


@pytest.fixture(scope="session")
def tiny_run(tiny_config, tmp_path_factory) -> Path:
    """A trained run directory (tiny model); tests must not modify it."""
    from edgexray.pipeline.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny run"
    train(tiny_config, run_dir, verbose=0)
    return run_dir


@pytest.fixture(scope="session")
def tiny_tflite(tiny_run, tiny_config, tmp_path_factory) -> dict[str, Path]:
    """float32 and full-int8 .tflite files with sidecars, from the tiny run."""
    from edgexray import artifacts
    from edgexray.export import convert
    from edgexray.pipeline import data

    model = artifacts.load_keras(tiny_run / artifacts.MODEL)
    samples = data.load_manifest(tiny_run / artifacts.MANIFEST)
    paths, _ = data.select(samples, "train", Path(tiny_config.data))
    images = [data.model_input(p, tiny_config.input_spec) for p in paths]
    out = tmp_path_factory.mktemp("tflite") / "models dir"
    common = dict(
        method_config={},
        input_spec=tiny_config.input_spec,
        threshold=0.5,
        target_recall=0.97,
        sparsity=0.0,
        output_kind=convert.output_kind(model),
        check_image=images[0],
    )
    convert.write_tflite(
        convert.to_float32(model), out / "float32.tflite", method="float32", **common
    )
    convert.write_tflite(
        convert.to_full_int8(model, images), out / "int8.tflite", method="int8", **common
    )
    return {"float32": out / "float32.tflite", "int8": out / "int8.tflite"}


@pytest.fixture(scope="session")
def device(tmp_path_factory) -> Path:
    """The edge runtime as in a bundle (edge_runtime/ and the infer.py launcher), alone in a
    folder with spaces."""
    from edgexray.export.bundle import write_runtime

    folder = tmp_path_factory.mktemp("edge") / "edge device"
    folder.mkdir()
    write_runtime(folder)
    return folder


@pytest.fixture
def film(tmp_path) -> Path:
    path = tmp_path / "a film.png"
    synthetic_xray(np.random.default_rng(0), pneumonia=True).save(path)
    return path


@pytest.fixture
def run_copy(tiny_run, tiny_tflite, tmp_path) -> Path:
    """A trained run with float32 and int8 variants, in a path with spaces."""
    run_dir = tmp_path / "my run"
    shutil.copytree(tiny_run, run_dir)
    (run_dir / "tflite").mkdir()
    for path in tiny_tflite.values():
        for suffix in (".tflite", ".json"):
            shutil.copy(
                path.with_suffix(suffix), run_dir / "tflite" / path.with_suffix(suffix).name
            )
    return run_dir


@pytest.fixture(scope="module")
def site_folder(tmp_path_factory):
    """A few real test/ films in NORMAL/ and PNEUMONIA/ (copies, under a path with spaces)."""
    folder = tmp_path_factory.mktemp("scope gate") / "site films"
    for label in ("NORMAL", "PNEUMONIA"):
        names = sorted(p.name for p in (SHARED_TEST / label).iterdir())[1:4]
        (folder / label).mkdir(parents=True)
        for name in names:
            shutil.copy(SHARED_TEST / label / name, folder / label / name)
    return folder
