"""The data (pipeline/data.py): patient splits, Kaggle layouts, bad folders, augmentation."""

import logging
import shutil
from collections import defaultdict

import numpy as np
import pytest
from conftest import SHARED_TRAIN, make_xray_folder

from edgexray.edge_runtime.preprocess import equalize
from edgexray.errors import EdgexrayError
from edgexray.pipeline import augment, data


def test_patient_id_parses_kaggle_names():
    assert data.patient_id("person1000_bacteria_2931.jpeg") == "person1000"
    assert data.patient_id("person1000_virus_1681.jpeg") == "person1000"
    assert data.patient_id("IM-0115-0001.jpeg") == "IM-0115"
    assert data.patient_id("NORMAL2-IM-0587-0001-0001.jpeg") == "NORMAL2-IM-0587"
    assert data.patient_id("scan from clinic.png") == "scan from clinic"


def _real_samples():
    """Samples named like the shared training split (names only; nothing is decoded)."""
    samples = []
    for label, name in enumerate(data.LABELS):
        for path in sorted((SHARED_TRAIN / name).iterdir()):
            samples.append(data.Sample(f"{name}/{path.name}", label, data.patient_id(path.name)))
    return samples


@pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="shared data not present")
def test_split_of_real_names_never_puts_a_patient_in_two_splits():
    split = data.split_by_patient(_real_samples(), 0.15, 0.15, seed=42)
    splits_of_patient = defaultdict(set)
    for sample in split:
        splits_of_patient[sample.patient_id].add(sample.split)
    assert all(len(splits) == 1 for splits in splits_of_patient.values())
    counts = data.split_counts(split)
    for name in ("val", "test"):
        share = counts[name]["images"] / len(split)
        assert 0.13 < share < 0.17
        # Stratified: each split keeps the overall pneumonia share (about 74%).
        assert abs(counts[name]["PNEUMONIA"] / counts[name]["images"] - 3875 / 5216) < 0.03


def test_split_is_reproducible_by_seed_and_changes_with_it():
    samples = [data.Sample(f"x/{i}.png", i % 2, f"p{i // 3}") for i in range(300)]
    first = data.split_by_patient(samples, 0.2, 0.2, seed=7)
    assert first == data.split_by_patient(samples, 0.2, 0.2, seed=7)
    assert first != data.split_by_patient(samples, 0.2, 0.2, seed=8)


def test_kaggle_test_folder_becomes_the_test_split(tmp_path):
    make_xray_folder(tmp_path / "kaggle" / "train", per_class=12)
    make_xray_folder(tmp_path / "kaggle" / "test", per_class=4, seed=1, first_patient=100)
    samples, skipped = data.scan(tmp_path / "kaggle")
    split = data.split_by_patient(samples, 0.25, 0.25, seed=0)
    test = [s for s in split if s.split == "test"]
    assert len(test) == 8 and all(s.path.startswith("test/") for s in test)
    assert {s.split for s in split if s.path.startswith("train/")} == {"train", "val"}
    assert skipped == []


def test_test_split_is_exactly_the_test_folder_even_with_shared_patient_ids(tmp_path):
    # Kaggle reuses personNNN ids in train/ and test/ for different children: the test
    # split must stay exactly test/, and the train/ films of a shared id keep training.
    make_xray_folder(tmp_path / "kaggle" / "train", per_class=12)
    make_xray_folder(tmp_path / "kaggle" / "test", per_class=4, seed=1, first_patient=0)
    samples, _ = data.scan(tmp_path / "kaggle")
    split = data.split_by_patient(samples, 0.25, 0.25, seed=0)
    test_files = sorted(
        p.relative_to(tmp_path / "kaggle").as_posix()
        for p in (tmp_path / "kaggle" / "test").rglob("*.jpeg")
    )
    assert sorted(s.path for s in split if s.split == "test") == test_files
    shared = {s.patient_id for s in split if s.split == "test"}
    assert any(s.patient_id in shared and s.split == "train" for s in split)


def test_folder_names_match_case_insensitively(tmp_path):
    make_xray_folder(tmp_path / "d", per_class=2)
    (tmp_path / "d" / "NORMAL").rename(tmp_path / "d" / "normal")
    samples, _ = data.scan(tmp_path / "d")
    assert sorted({s.label for s in samples}) == [0, 1]


def test_corrupt_jpeg_is_skipped_with_warning(tmp_path, caplog):
    root = make_xray_folder(tmp_path / "d", per_class=4)
    good = root / "NORMAL" / "IM-0000-0001.jpeg"
    (root / "NORMAL" / "IM-0099-0001.jpeg").write_bytes(good.read_bytes()[:200])
    (root / "PNEUMONIA" / "notes.jpeg").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="edgexray"):
        samples, skipped = data.scan(root)
    assert sorted(p.name for p in skipped) == ["IM-0099-0001.jpeg", "notes.jpeg"]
    assert len(samples) == 8
    assert sum("IM-0099-0001.jpeg" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("problem", ["missing", "empty", "only corrupt"])
def test_bad_class_folder_is_a_clear_error(tmp_path, problem):
    root = make_xray_folder(tmp_path / "d", per_class=2)
    shutil.rmtree(root / "PNEUMONIA")
    if problem != "missing":
        (root / "PNEUMONIA").mkdir()
    if problem == "only corrupt":
        (root / "PNEUMONIA" / "person1_virus_1.jpeg").write_bytes(b"\xff\xd8\xff broken")
    with pytest.raises(EdgexrayError, match="PNEUMONIA"):
        data.scan(root)


def test_equalisation_undoes_exposure_changes():
    rng = np.random.default_rng(0)
    gray = np.clip(rng.normal(120, 40, (64, 64)), 0, 255).astype(np.uint8)
    for change in (augment.SHIFTS["gamma 0.6 (brighter)"], augment.SHIFTS["gamma 1.6 (darker)"]):
        difference = np.abs(equalize(change(gray)).astype(int) - equalize(gray).astype(int))
        assert np.mean(difference) < 4  # only the 8-bit rounding of the change remains


def test_augmentation_is_seeded_and_keeps_shape():
    gray = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    first = augment.augment(gray, np.random.default_rng(3))
    assert first.shape == gray.shape and first.dtype == np.uint8
    assert np.array_equal(first, augment.augment(gray, np.random.default_rng(3)))
    assert not np.array_equal(first, gray)


def test_manifest_round_trips(tmp_path):
    samples = [
        data.Sample("NORMAL/a b.png", 0, "a", "train"),
        data.Sample("P/c.png", 1, "c", "test"),
    ]
    data.save_manifest(samples, tmp_path / "manifest.csv")
    assert data.load_manifest(tmp_path / "manifest.csv") == samples


def test_mixup_blends_films_labels_and_class_weights_alike():
    from edgexray.compat import tf

    images = tf.constant(np.stack([np.zeros((4, 4, 1)), np.ones((4, 4, 1))]), tf.float32)
    labels = tf.constant([0.0, 1.0])
    mixed, soft, weights = data.mix_batch(
        images, labels, tf.constant([5, 9], tf.int64), 0.4, {0: 2.0, 1: 0.5}
    )
    share = 1.0 - mixed.numpy()[0, 0, 0, 0]  # film 0 is all zeros, its partner all ones
    assert 0 < share < 1 and np.allclose(mixed.numpy()[0], 1 - share)
    assert np.isclose(soft.numpy()[0], 1 - share)
    assert np.isclose(weights.numpy()[0], share * 2.0 + (1 - share) * 0.5)
    again = data.mix_batch(images, labels, tf.constant([5, 9], tf.int64), 0.4, {0: 2.0, 1: 0.5})
    assert np.array_equal(again[0].numpy(), mixed.numpy())  # seeded: a run is reproducible
