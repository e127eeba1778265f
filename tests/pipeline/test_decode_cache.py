"""The decode cache returns exactly what decoding returns, and survives what disks do."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest
from conftest import make_xray_folder, synthetic_xray

from edgexray.edge_runtime import readers
from edgexray.edge_runtime.errors import ImageError
from edgexray.edge_runtime.preprocess import resize
from edgexray.pipeline import data, decode_cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "decode cache"
    monkeypatch.setenv("EDGEXRAY_CACHE", str(root))
    return root


@pytest.fixture
def film(tmp_path):
    path = tmp_path / "films here" / "IM-0001-0001.jpeg"
    path.parent.mkdir()
    synthetic_xray(np.random.default_rng(3), True, size=(300, 260)).save(path, quality=90)
    return path


def spec(height, width):
    return {"height": height, "width": width, "normalization": "scale"}


def decoded(path, height=64, width=48):
    return resize(readers.read(path)[0], height, width)


def entries(root):
    return sorted(root.rglob("*.gray")) if root.exists() else []


def no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded although it was cached")

    monkeypatch.setattr(readers, "read", refuse)


def test_cached_film_is_exactly_the_decoded_film_and_is_not_decoded_again(cache, film, monkeypatch):
    expected = decoded(film)
    first = decode_cache.resized_grayscale(film, spec(64, 48))
    assert len(entries(cache)) == 1
    no_decoding(monkeypatch)
    second = decode_cache.resized_grayscale(film, spec(64, 48))
    assert first.dtype == second.dtype == np.uint8
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)
    second[0, 0] ^= 1  # writable, like a freshly decoded image


def test_entry_is_found_by_content_not_by_name_and_an_edited_film_is_decoded(
    cache, film, monkeypatch
):
    decode_cache.resized_grayscale(film, spec(64, 48))
    copy = film.with_name("renamed copy.jpeg")
    shutil.copyfile(film, copy)
    synthetic_xray(np.random.default_rng(4), False, size=(300, 260)).save(film, quality=90)
    edited = decoded(film)
    assert not np.array_equal(decode_cache.resized_grayscale(film, spec(64, 48)), decoded(copy))
    np.testing.assert_array_equal(decode_cache.resized_grayscale(film, spec(64, 48)), edited)
    no_decoding(monkeypatch)
    decode_cache.resized_grayscale(copy, spec(64, 48))  # the first version's entry


def test_each_model_size_has_its_own_entry(cache, film):
    small = decode_cache.resized_grayscale(film, spec(32, 32))
    large = decode_cache.resized_grayscale(film, spec(128, 128))
    assert small.shape == (32, 32) and large.shape == (128, 128)
    assert len(entries(cache)) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip a pixel", "empty", "other size"])
def test_damaged_entry_is_ignored_and_rewritten(cache, film, damage):
    expected = decode_cache.resized_grayscale(film, spec(64, 48))
    (entry,) = entries(cache)
    content = bytearray(entry.read_bytes())
    if damage == "truncate":
        content = content[: len(content) // 2]
    elif damage == "flip a pixel":
        content[decode_cache.HEADER.size + 5] ^= 0xFF
    elif damage == "empty":
        content = bytearray()
    else:  # a whole, valid entry of the wrong size under this key
        decode_cache.write_entry(entry, np.zeros((48, 64), np.uint8))
        content = bytearray(entry.read_bytes())
    entry.write_bytes(bytes(content))
    np.testing.assert_array_equal(decode_cache.resized_grayscale(film, spec(64, 48)), expected)
    assert decode_cache.read_entry(entry, 64, 48) is not None  # written again, whole


def test_cache_off_writes_nothing(tmp_path, film, monkeypatch):
    monkeypatch.setenv("EDGEXRAY_CACHE", "off")
    assert decode_cache.cache_root() is None
    np.testing.assert_array_equal(decode_cache.resized_grayscale(film, spec(64, 48)), decoded(film))


def test_default_location_follows_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEXRAY_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert decode_cache.cache_root() == tmp_path / "xdg" / "edgexray" / "decoded"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert decode_cache.cache_root() == tmp_path / "home" / ".cache" / "edgexray" / "decoded"


def test_unwritable_cache_warns_once_and_still_decodes(tmp_path, film, monkeypatch, caplog):
    blocker = tmp_path / "a file, not a folder"
    blocker.write_text("")
    monkeypatch.setenv("EDGEXRAY_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="edgexray"):
        for size in (40, 41):
            np.testing.assert_array_equal(
                decode_cache.resized_grayscale(film, spec(size, size)), decoded(film, size, size)
            )
    assert sum("not writable" in r.message for r in caplog.records) == 1


def test_unreadable_film_is_an_image_error_and_is_not_cached(cache, tmp_path):
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageError):
        decode_cache.resized_grayscale(broken, spec(32, 32))
    with pytest.raises(ImageError):
        decode_cache.resized_grayscale(tmp_path / "missing.jpeg", spec(32, 32))
    assert entries(cache) == []


def test_scan_leaves_every_film_ready_for_the_first_epoch(cache, tmp_path, monkeypatch):
    root = make_xray_folder(tmp_path / "site data", per_class=6)
    spec = {"height": 32, "width": 32, "normalization": "equalize"}
    samples, _ = data.scan(root, input_spec=spec)
    assert len(entries(cache)) == len(samples) == 12
    no_decoding(monkeypatch)
    for sample in samples:
        data.model_input(str(root / sample.path), spec)


def test_training_batches_are_identical_with_and_without_the_cache(tmp_path, monkeypatch):
    root = make_xray_folder(tmp_path / "site data", per_class=8)
    paths = sorted(str(p) for p in root.rglob("*.jpeg"))
    labels = [int("PNEUMONIA" in p) for p in paths]
    spec = {"height": 32, "width": 32, "normalization": "equalize"}
    epochs = {}
    for setting in ("off", str(tmp_path / "cache"), str(tmp_path / "cache")):
        monkeypatch.setenv("EDGEXRAY_CACHE", setting)
        dataset = data.make_dataset(
            paths, labels, spec, 8, training=True, seed=5, augmentation="site"
        )
        epochs[len(epochs)] = [
            [(images.numpy(), target.numpy()) for images, target in dataset] for _ in range(2)
        ]
    assert len(entries(tmp_path / "cache")) == len(paths)
    for run in (1, 2):  # cold cache, then warm
        for epoch_a, epoch_b in zip(epochs[0], epochs[run], strict=True):
            for (images_a, labels_a), (images_b, labels_b) in zip(epoch_a, epoch_b, strict=True):
                np.testing.assert_array_equal(images_a, images_b)
                np.testing.assert_array_equal(labels_a, labels_b)


@pytest.mark.slow
def test_training_history_is_identical_with_and_without_the_cache(
    tiny_config, tmp_path, monkeypatch
):
    from edgexray.pipeline.train import train

    config = dataclasses.replace(tiny_config, epochs=2)
    histories = {}
    for setting in ("off", str(tmp_path / "cold cache"), str(tmp_path / "cold cache")):
        monkeypatch.setenv("EDGEXRAY_CACHE", setting)
        run_dir = tmp_path / f"run {len(histories)}"
        histories[len(histories)] = train(config, run_dir, verbose=0)["history"]
    assert entries(tmp_path / "cold cache")
    assert histories[0] == histories[1] == histories[2]  # uncached, cold, warm
