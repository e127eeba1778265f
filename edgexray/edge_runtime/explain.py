"""Where the deployed model looked: occlusion sensitivity on the .tflite itself.

A square patch of the model input is greyed out (set to the input's own mean), one
position after another on a grid, and the model is run on each occluded copy through
`Classifier`; the map is how much the pneumonia evidence falls when that area is
hidden, placed at each patch's centre and interpolated in between. It needs only forward
passes, so it runs on the device (numpy, Pillow and the interpreter; no TensorFlow, no
gradients), and it explains the very int8 model that gave the answer, not a float cousin.

The map is the drop of the pneumonia LOGIT, not of the probability: the sigmoid is flat
near 0 and 1, so on a film at 0.995 hiding the whole lesion may move the probability by
0.004 and the map would look empty, while the logit (what the reference model emits, as
uint8 steps of 0.063) falls in proportion to the evidence removed. Positive values are
areas that argue for pneumonia, negative ones areas that argue against it.

The interpreter runs one image per call (batches cost the same per image), so the cost is
one invoke per grid position. The default grid is a share of the model input's side
(`default_grid`): patches a quarter of it, every 3/16 of it, so 5 x 5 = 25 passes on any
input whose side is a multiple of 16. On the 128 px reference model that is 32 px patches
every 24 px, the finest that keeps a film inside the budget of 150 ms at 1 thread on an
AVX2 CPU without VNNI, where one int8 invoke takes about 3 ms (benchmarks/README.md
"Heatmaps" has the measured time and the other grids), and its 24 px step is about the
resolution of the model's own last 8 x 8 feature map; on a 224 px EfficientNet-Lite0
input it is 56 px every 42 px, the same 26 runs of a model that costs more per run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import readers
from .classifier import Classifier
from .errors import InferenceError
from .preprocess import resize

# Overlays are for reading on a screen: the film is shown with this longest side, shrunk
# from 4000 px originals and enlarged from the 224 px films of the Kaggle set.
OVERLAY_SIDE = 640
# Areas whose drop is below this share of the film's largest drop stay uncoloured, so
# the colour marks where the evidence is, not the noise floor of the uint8 output.
SHOWN_FROM = 0.25
# The colour scale runs to the film's largest drop, but never less than one logit (the
# odds of pneumonia falling 2.7-fold): otherwise a normal film whose largest drop is
# 0.05 would glow as brightly as a lobar pneumonia.
MIN_SCALE = 1.0
OVERLAY_OPACITY = 0.6
# Key colours of the upper part of matplotlib's "inferno" (purple, red, orange, pale
# yellow), interpolated in numpy: ordered in lightness, and its darkest colour still
# stands out on a grey film, where inferno's black would not.
HEAT = np.array(
    [[101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]],
    dtype=np.float64,
)
# A probability of exactly 0 or 1 (a sigmoid-output model in float32) has no finite logit.
PROBABILITY_CLIP = 1e-7


@dataclass(frozen=True)
class Grid:
    """Occluding patch side and step, in pixels of the model input."""

    patch: int = 32
    stride: int = 24

    def __post_init__(self):
        if self.patch < 1 or self.stride < 1:
            raise InferenceError("patch and stride must be at least 1 pixel")
        if self.stride > self.patch:
            raise InferenceError(
                f"stride {self.stride} is larger than the patch {self.patch}: "
                "some pixels would never be occluded"
            )

    def starts(self, length: int) -> list[int]:
        """Patch origins along one side; the last patch ends at the border."""
        if self.patch > length:
            raise InferenceError(f"patch {self.patch} is larger than the input ({length})")
        starts = list(range(0, length - self.patch + 1, self.stride))
        if starts[-1] != length - self.patch:
            starts.append(length - self.patch)
        return starts

    def centres(self, length: int) -> np.ndarray:
        """Patch centres along one side, in pixels (0.5 between two pixels)."""
        return np.array(self.starts(length), dtype=np.float64) + (self.patch - 1) / 2.0

    def passes(self, height: int, width: int) -> int:
        """Forward passes per film, the unoccluded one included."""
        return len(self.starts(height)) * len(self.starts(width)) + 1


# The default grid as shares of the input's side (`default_grid`).
PATCH_SHARE = 0.25
STRIDE_SHARE = 0.1875


def default_grid(height: int, width: int) -> Grid:
    """The grid used when none is given: patches PATCH_SHARE of the input's shorter side,
    every STRIDE_SHARE of it (32/24 px at 128 px, 56/42 px at 224 px)."""
    side = min(int(height), int(width))
    return Grid(max(1, round(side * PATCH_SHARE)), max(1, round(side * STRIDE_SHARE)))


def grid_help() -> str:
    """How the grid option reads, for both command lines."""
    small, large = default_grid(128, 128), default_grid(224, 224)
    return (
        f"in pixels of the model input (default: patches of {Fraction(PATCH_SHARE)} of its "
        f"side every {Fraction(STRIDE_SHARE)} of it, {small.patch}/{small.stride} for a 128 px "
        f"input and {large.patch}/{large.stride} for 224 px, {small.passes(128, 128)} model "
        "runs a film; 20/10 is finer and takes 145 at 128 px)"
    )


def input_grid(input_spec: dict) -> Grid:
    """`default_grid` for a sidecar's input (its height and width)."""
    return default_grid(int(input_spec["height"]), int(input_spec["width"]))


def parse_grid(text: str) -> Grid:
    """A grid from "PATCH/STRIDE" (pixels of the model input), as the commands take it."""
    patch, slash, stride = text.partition("/")
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    if not (slash and patch.strip().isdecimal() and stride.strip().isdecimal()):
        raise InferenceError(f"grid {text!r}: give PATCH/STRIDE in pixels, e.g. 20/10")
    return Grid(int(patch), int(stride))


@dataclass(frozen=True)
class Explanation:
    """One film's map. saliency is (H, W) float32 at the model input's size: the drop of
    the pneumonia logit when a patch centred there is greyed (between_centres)."""

    probability: float
    saliency: np.ndarray
    grid: Grid


def logit(probability: float) -> float:
    """The logit of a probability, finite even for 0 and 1."""
    p = min(max(float(probability), PROBABILITY_CLIP), 1.0 - PROBABILITY_CLIP)
    return float(np.log(p) - np.log1p(-p))


def fill_value(tensor: np.ndarray) -> np.ndarray:
    """What an occluded pixel becomes: the mean of the model input tensor, in its dtype."""
    mean = tensor.mean()
    return np.asarray(np.round(mean) if tensor.dtype.kind in "iu" else mean).astype(tensor.dtype)


def occlusion_map(
    classifier: Classifier, gray: np.ndarray, grid: Grid | None = None
) -> Explanation:
    """Occlusion sensitivity of one resized 8-bit film (the model's height x width), on
    `grid` (None: `default_grid` of the input).

    The patch is filled with the mean of the model input tensor, i.e. after the sidecar's
    normalisation (equalised films have mean grey about 0.5): occluding before the
    equalisation would change the histogram, and so every pixel, not only the patch.
    """
    tensor = np.array(classifier.tensor_of(gray))  # a writable copy (tensor_of may view gray)
    probability = classifier.run(tensor)
    reference = logit(probability)
    fill = fill_value(tensor)
    height, width = tensor.shape[1:3]
    grid = grid or default_grid(height, width)
    tops, lefts = grid.starts(height), grid.starts(width)
    drops = np.zeros((len(tops), len(lefts)), dtype=np.float64)
    occluded = tensor.copy()
    size = grid.patch
    for row, top in enumerate(tops):
        for column, left in enumerate(lefts):
            area = (0, slice(top, top + size), slice(left, left + size))
            occluded[area] = fill
            drops[row, column] = reference - logit(classifier.run(occluded))
            occluded[area] = tensor[area]
    saliency = between_centres(drops, grid.centres(height), grid.centres(width), height, width)
    return Explanation(probability, saliency.astype(np.float32), grid)


def between_centres(
    drops: np.ndarray, rows: np.ndarray, columns: np.ndarray, height: int, width: int
) -> np.ndarray:
    """A map the size of the input from one drop per patch: each drop sits at its patch's
    centre, bilinear in between and constant beyond the outer centres. The map is as smooth
    as the grid is fine, instead of showing the patches' edges as if they were the film's.
    """
    along_rows = np.stack([np.interp(np.arange(width), columns, line) for line in drops])
    return np.stack(
        [np.interp(np.arange(height), rows, along_rows[:, x]) for x in range(width)], axis=1
    )


def explain_film(
    classifier: Classifier, path: str | Path, grid: Grid | None = None
) -> tuple[Explanation, np.ndarray]:
    """The map of one image file and the film itself (8-bit, as read), for the overlay.

    Raises:
        ImageError: the file cannot be read.
    """
    film = readers.read(path)[0]
    return explain_gray(classifier, film, grid), film


def explain_gray(classifier: Classifier, film: np.ndarray, grid: Grid | None = None) -> Explanation:
    """The map of one 8-bit film as read (any size): resized as the model reads it."""
    spec = classifier.sidecar["input"]
    gray = resize(film, int(spec["height"]), int(spec["width"]))
    return occlusion_map(classifier, gray, grid)


# --- pictures ---------------------------------------------------------------------------


def _heat_table(steps: int = 256) -> np.ndarray:
    positions = np.linspace(0.0, len(HEAT) - 1, steps)
    anchors = np.arange(len(HEAT))
    channels = [np.interp(positions, anchors, HEAT[:, c]) for c in range(3)]
    return np.round(np.stack(channels, axis=-1)).astype(np.uint8)


HEAT_TABLE = _heat_table()  # 256 steps: a lookup per pixel instead of an interpolation


def heat_steps(values: np.ndarray) -> np.ndarray:
    """The HEAT_TABLE step (uint8) of values in [0, 1]."""
    steps = len(HEAT_TABLE) - 1
    return np.round(np.clip(values, 0.0, 1.0) * steps).astype(np.uint8)


def colormap(values: np.ndarray) -> np.ndarray:
    """RGB uint8 colours (..., 3) of values in [0, 1] on the HEAT scale."""
    return HEAT_TABLE[heat_steps(values)]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: bitmap font
        return ImageFont.load_default()


def display_size(height: int, width: int, side: int = OVERLAY_SIDE) -> tuple[int, int]:
    """(height, width) of a film shown with its longest side equal to side."""
    scale = side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def colour_scale(explanation: Explanation) -> float:
    """The logit drop shown in the brightest colour: the film's largest, at least MIN_SCALE."""
    return max(float(explanation.saliency.max()), MIN_SCALE)


def overlay(
    film: np.ndarray,
    explanation: Explanation,
    threshold: float | None = None,
    side: int = OVERLAY_SIDE,
    legend: bool = True,
) -> Image.Image:
    """The film with the positive part of the map in colour, and a legend strip below.

    The map is upsampled (bilinear) from the model input to the film's own aspect ratio:
    the model saw the film squashed to a square, so its grid stretches back with it.
    """
    height, width = display_size(*film.shape, side)
    shown = Image.fromarray(film).resize((width, height), Image.Resampling.BILINEAR)
    saliency = Image.fromarray(explanation.saliency.astype(np.float32), mode="F")
    scale = colour_scale(explanation)
    level = np.asarray(saliency.resize((width, height), Image.Resampling.BILINEAR)) / scale
    # Blended by Pillow in C, a small part of the heatmap's time budget: a palette image
    # of the colours, pasted through a mask that is OVERLAY_OPACITY where evidence is shown.
    heat = Image.fromarray(heat_steps(level), mode="P")
    heat.putpalette(HEAT_TABLE.tobytes())
    opacity = round(OVERLAY_OPACITY * 255)
    mask = Image.fromarray(np.where(level >= SHOWN_FROM, opacity, 0).astype(np.uint8), mode="L")
    picture = Image.composite(heat.convert("RGB"), shown.convert("RGB"), mask)
    return _with_legend(picture, explanation, scale, threshold) if legend else picture


def legend_html(grid: Grid) -> str:
    """How to read the overlays, for the HTML report: the same colours as a CSS gradient."""
    stops = ", ".join(f"rgb({r:.0f},{g:.0f},{b:.0f})" for r, g, b in HEAT)
    return (
        f'<div class="scale" style="background:linear-gradient(to right, {stops})"></div>'
        "<p>Colour: how far the pneumonia logit falls when that area of the film is greyed "
        f"out ({grid.patch} px patches every {grid.stride} px of the model's input), from 0 "
        f"(left) to the film's largest fall, at least {MIN_SCALE:g} (right; printed under "
        f"each film). Areas below {SHOWN_FROM:.0%} of that, and areas that argue against "
        "pneumonia, are not coloured. The map shows what this model used, right or wrong: "
        "colour on the film's edge, markers or text means the model read them, not the "
        "lungs.</p>"
    )


def _with_legend(
    picture: Image.Image, explanation: Explanation, scale: float, threshold: float | None
) -> Image.Image:
    width = max(picture.width, 480)
    font = _font(13)
    line = 17
    strip = Image.new("RGB", (width, 12 + 14 + 5 * line), "white")
    bar = colormap(np.linspace(0.0, 1.0, width - 20))[np.newaxis].repeat(14, axis=0)
    strip.paste(Image.fromarray(bar, mode="RGB"), (10, 8))
    draw = ImageDraw.Draw(strip)
    cut = 10 + round(SHOWN_FROM * (width - 20))
    draw.line([(cut, 4), (cut, 26)], fill="black", width=2)
    grid = explanation.grid
    answer = f"pneumonia probability {explanation.probability:.3f}"
    if threshold is not None:
        answer += f" (threshold {threshold:.3f})"
    notes = [
        f"colour: 0 to {scale:.2f}, fall of the pneumonia logit when the area is greyed",
        f"({grid.patch} px patches every {grid.stride} px of the {_input_size(explanation)} "
        "model input)",
        f"uncoloured: below the mark ({SHOWN_FROM:.0%} of the largest fall), or evidence "
        "against pneumonia",
        answer,
        "Screening aid, not a diagnosis: a clinician reads the film.",
    ]
    for number, note in enumerate(notes):
        draw.text((10, 28 + number * line), note, fill="black", font=font)
    framed = Image.new("RGB", (width, picture.height + strip.height), "white")
    framed.paste(picture, ((width - picture.width) // 2, 0))
    framed.paste(strip, (0, picture.height))
    return framed


def _input_size(explanation: Explanation) -> str:
    height, width = explanation.saliency.shape
    return f"{width}x{height}"


def png_bytes(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    # zlib level 1: a third of the default level's time on an overlay, for a file about
    # 30% larger (benchmarks/README.md "Heatmaps").
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def jpeg_bytes(picture: Image.Image, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
