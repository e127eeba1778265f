"""A batch: films in, each classified once, then handed to every output (sink) in turn.

    paths -> readers.read -> Classifier -> (explain, once, when a sink shows it) -> sinks

Each film is read once: the sinks get the film that was classified, never a file opened
again by its name.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import readers, scope
from .classifier import Classifier
from .errors import InferenceError
from .explain import Grid, input_grid, occlusion_map, parse_grid
from .interpreter import check_threads
from .outputs import Sink
from .outputs.deidentify import Deidentify, load_key
from .outputs.heatmaps import Heatmaps
from .outputs.records import FORMATS, Records, emit
from .outputs.report import Report, check_writable


def classify_all(classifier: Classifier, paths, sinks: list[Sink], grid: Grid | None = None):
    """Classify every path and hand each film to the sinks, in their order; close them.
    Maps are made on `grid` (None: the default grid of the model's input)."""
    explaining = any(sink.needs_map for sink in sinks)
    for path in paths:
        film = classifier.classify_film(path)
        explanation = None
        if explaining and film.resized is not None:
            explanation = occlusion_map(classifier, film.resized, grid)
        for sink in sinks:
            sink.add(film, explanation)
    for sink in sinks:
        sink.close()


def run(
    model_path: str | Path,
    inputs,
    fmt: str = "jsonl",
    threads: int | None = None,
    stream=None,
    explain_dir: str | Path | None = None,
    report_path: str | Path | None = None,
    check_scope: bool = True,
    grid: str | None = None,
    deidentify_key: str | Path | None = None,
) -> int:
    """Classify every image in inputs (files or folders), one record per image on stream.

    With explain_dir, each readable film's heatmap (overlay PNG and map .npy) is written
    there and its record carries their paths; with report_path, one HTML report of the
    batch is written there at the end; grid ("PATCH/STRIDE") replaces their default
    occlusion grid. With deidentify_key (a file holding the site's secret key), every
    output is fit for sharing: no names or dates, IDs as keyed hashes (outputs/deidentify.py).
    A model without scope statistics gets one warning line on stderr: its
    records say in_scope null, and nothing catches a film it cannot read
    (check_scope=False: not checked at all).

    Returns:
        EXIT_OK when every image was read and in scope (or not checked),
        EXIT_UNREADABLE when some could not be read, else EXIT_OUT_OF_SCOPE when some
        were out of scope.

    Raises:
        InferenceError: a bad format, thread count or grid, no images at all, or a
            missing, corrupt or mismatched model.
        OutputError: the records could not be written.
    """
    if fmt not in FORMATS:
        raise InferenceError(f"unknown format {fmt!r}: choose {' or '.join(FORMATS)}")
    check_threads(threads)
    chosen = parse_grid(grid) if grid else None
    if report_path is not None:
        check_writable(report_path)
    key = load_key(deidentify_key) if deidentify_key is not None else None
    classifier = Classifier(model_path, threads, check_scope)
    spec = classifier.sidecar["input"]
    occlusion = chosen or input_grid(spec)
    if explain_dir is not None or report_path is not None:
        occlusion.passes(int(spec["height"]), int(spec["width"]))  # a patch too large: now
    paths = readers.find(inputs)
    if not paths:
        raise InferenceError(f"no images found in {', '.join(map(str, inputs))}")
    if check_scope and classifier.scope is None:
        print(
            f"warning: {Path(model_path).name}: {scope.NO_STATISTICS}; films it was not "
            "trained on are not caught (records say in_scope null)",
            file=sys.stderr,
        )
    records = Records(stream or sys.stdout, fmt)
    sinks: list[Sink] = [records]
    if explain_dir is not None:  # first: it names its files in the record
        sinks.insert(0, Heatmaps(explain_dir, classifier.threshold))
    if report_path is not None:
        sinks.append(Report(report_path, classifier.sidecar, model_path, occlusion))
    if key is not None:  # before every other: none of them sees the identity
        sinks.insert(0, Deidentify(key))
    classify_all(classifier, paths, sinks, occlusion)
    return records.exit_code()


def list_images(inputs, stream=None) -> None:
    """Write the film files among inputs (folders walked), each ended by a NUL byte.

    The watch-folder script moves exactly these, so it follows the same rule as the
    runtime without a shell copy of it; NUL (for `xargs -0`) keeps any file name intact.
    """
    found = [path for path in readers.find(inputs) if readers.is_film_file(path)]
    stream = stream or sys.stdout
    emit(stream, stream.write, "".join(f"{path}\0" for path in found))
