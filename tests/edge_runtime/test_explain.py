"""Occlusion maps from the deployed .tflite (edgexray/edge_runtime/explain.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from explain_support import LESION, SIZE, lesion_film, write_lesion_model
from PIL import Image

from edgexray.edge_runtime import REFERENCE_MODEL, explain
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.errors import InferenceError
from edgexray.edge_runtime.outputs import heatmaps


@pytest.fixture(scope="module")
def lesion_model(tmp_path_factory) -> Path:
    return write_lesion_model(tmp_path_factory.mktemp("explain") / "lesion model")


def test_map_has_the_model_input_shape_and_is_finite():
    classifier = Classifier(REFERENCE_MODEL, threads=1)
    gray = np.tile(np.arange(128, dtype=np.uint8) * 2, (128, 1))
    explanation = explain.occlusion_map(classifier, gray, explain.Grid(32, 32))
    assert explanation.saliency.shape == (128, 128)
    assert explanation.saliency.dtype == np.float32
    assert np.isfinite(explanation.saliency).all()
    assert explanation.probability == classifier.run(classifier.tensor_of(gray))


def test_occluding_the_bright_patch_puts_the_map_there(lesion_model):
    classifier = Classifier(lesion_model, threads=1)
    film = lesion_film()
    explanation = explain.occlusion_map(classifier, film, explain.Grid(8, 4))
    assert explanation.probability > classifier.run(classifier.tensor_of(lesion_film(lesion=False)))
    row, column = np.unravel_index(np.argmax(explanation.saliency), explanation.saliency.shape)
    assert LESION[0].start <= row < LESION[0].stop and LESION[1].start <= column < LESION[1].stop
    # The map follows the lesion when it moves: it is not a fixed bias of the grid.
    moved = np.ascontiguousarray(film[::-1, ::-1])
    moved_map = explain.occlusion_map(classifier, moved, explain.Grid(8, 4)).saliency
    row, column = np.unravel_index(np.argmax(moved_map), moved_map.shape)
    assert SIZE - LESION[0].stop <= row < SIZE - LESION[0].start
    assert SIZE - LESION[1].stop <= column < SIZE - LESION[1].start


def test_grid_covers_every_pixel_and_counts_its_passes():
    grid = explain.Grid(16, 8)
    assert grid.starts(128) == list(range(0, 113, 8))
    assert grid.passes(128, 128) == 15 * 15 + 1
    assert explain.Grid(20, 10).starts(128)[-1] == 108  # the last patch ends at the border


def test_the_map_holds_each_drop_at_its_patch_centre_and_is_smooth_between():
    grid = explain.Grid(32, 24)
    centres = grid.centres(128)
    assert list(centres) == [15.5, 39.5, 63.5, 87.5, 111.5]
    drops = np.arange(25, dtype=np.float64).reshape(5, 5)
    saliency = explain.between_centres(drops, centres, centres, 128, 128)
    assert saliency.shape == (128, 128)
    # Between pixels 63 and 64 lies the centre of the middle patch: their mean is its drop.
    assert saliency[63:65, 63:65].mean() == pytest.approx(drops[2, 2])
    assert (saliency[:15, :15] == drops[0, 0]).all()  # constant beyond the outer centres
    assert np.abs(np.diff(saliency, axis=1)).max() <= 1.0 / 24 + 1e-12  # no patch edges


@pytest.mark.parametrize("patch, stride", [(8, 16), (0, 4), (4, 0)])
def test_a_grid_that_leaves_pixels_out_is_refused(patch, stride):
    with pytest.raises(InferenceError):
        explain.Grid(patch, stride)


def test_logit_is_finite_at_zero_and_one():
    assert np.isfinite([explain.logit(0.0), explain.logit(1.0)]).all()
    assert explain.logit(0.5) == 0.0


def test_overlay_keeps_the_film_aspect_and_colours_only_the_evidence(lesion_model):
    classifier = Classifier(lesion_model, threads=1)
    explanation = explain.occlusion_map(classifier, lesion_film(), explain.Grid(8, 4))
    wide_film = np.asarray(Image.fromarray(lesion_film()).resize((64, 32)))
    picture = explain.overlay(wide_film, explanation, threshold=0.5, side=320)
    pixels = np.asarray(picture)
    assert picture.width == 480  # the legend's minimum width; the film is 320 x 160
    film_part = pixels[:160, 80:400].astype(int)
    coloured = np.abs(film_part[..., 0] - film_part[..., 2]) > 20
    rows, columns = np.nonzero(coloured)
    assert coloured.any() and not coloured.all()
    # Columns 5..13 of 32 at 10x horizontal scale: the colour sits over the lesion.
    assert 5 * 10 - 40 <= columns.mean() <= 13 * 10 + 40
    assert rows.mean() > 80  # the lesion is in the lower half (rows 18..26 of 32)


def test_colormap_is_ordered_in_lightness():
    colours = explain.colormap(np.linspace(0, 1, 11)).astype(float)
    lightness = colours @ [0.299, 0.587, 0.114]
    assert np.all(np.diff(lightness) > 0)


def test_save_never_overwrites_earlier_files(tmp_path, lesion_model):
    classifier = Classifier(lesion_model, threads=1)
    explanation = explain.occlusion_map(classifier, lesion_film(), explain.Grid(8, 8))
    picture = explain.overlay(lesion_film(), explanation)
    folder = tmp_path / "heat maps"
    folder.mkdir()
    (folder / "a.png.heatmap.png").write_bytes(b"a user's file")
    overlay_path, map_path = heatmaps.save(folder, "films/a.png", picture, explanation)
    assert overlay_path.name == "a.png-2.heatmap.png" and map_path.name == "a.png-2.heatmap.npy"
    assert (folder / "a.png.heatmap.png").read_bytes() == b"a user's file"
    assert np.array_equal(np.load(map_path), explanation.saliency)
    assert Image.open(overlay_path).format == "PNG"
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []
