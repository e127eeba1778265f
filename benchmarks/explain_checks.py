"""Do the heatmaps mean something? Three checks and the time per film, on test/.

    python benchmarks/explain_checks.py [--data ../shared/data/chest_xray] [--random-films 40]

1. Model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"): the
   same architecture (pipeline/model.py) with freshly initialised weights, exported to
   full int8 with a representative set of train/ films like the shipped model; its maps
   must differ from the trained model's. Spearman rank correlation per film.
2. Deletion: greying the 10% of the model input the map ranks highest must lower the
   pneumonia probability more than greying random 10% areas of the same blob-like shape
   (the top 10% of a random map on the same grid), on the pneumonia films of test/.
3. Where the model looks: the share of the positive map (evidence for pneumonia) that
   lies in the film's outer border, the outer 10% of each side of the model input (36%
   of the area), normal against pneumonia films.
4. Time per film on the device path at 1 thread: classify (read, preprocess, run), then
   re-read, map, overlay and write the PNG and .npy, as `infer.py --explain` does.

Writes benchmarks/results/explain_checks.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edgexray.benchmarks.machine import cpu_model_and_features
from edgexray.edge_runtime import REFERENCE_MODEL, explain, readers
from edgexray.edge_runtime.batch import classify_all
from edgexray.edge_runtime.classifier import Classifier
from edgexray.edge_runtime.outputs.heatmaps import Heatmaps
from edgexray.edge_runtime.preprocess import resized_grayscale

RESULTS = Path(__file__).resolve().parent / "results" / "explain_checks.json"
BORDER = 0.10  # of each side
DELETED = 0.10  # of the area
RANDOM_DRAWS = 10
SEED = 0
# Grids timed for the budget (patch/stride, pixels of the 128 px model input), finest
# first; the finest that fits 150 ms per film on the device path is the default.
TIMED_GRIDS = ((20, 10), (32, 16), (24, 24), (32, 24), (32, 32))
TIMED_EVERY = 3  # every third film of test/ (104 films) per grid


def border_mask(height: int, width: int, share: float = BORDER) -> np.ndarray:
    """True on the outer `share` of each side."""
    rows, columns = round(share * height), round(share * width)
    mask = np.ones((height, width), dtype=bool)
    mask[rows : height - rows, columns : width - columns] = False
    return mask


def share_in(part: np.ndarray, mass: np.ndarray) -> float | None:
    """Share of a non-negative map's mass inside `part`; None when there is no mass."""
    total = float(mass.sum())
    return float(mass[part].sum() / total) if total > 0 else None


def border_facts(saliency: np.ndarray) -> dict:
    """Where one film's evidence lies: the border's share of the evidence for pneumonia
    (positive map) and against it (negative map), the mean evidence for pneumonia per
    pixel in the border and in the centre (logit), and whether the peak is in the border."""
    border = border_mask(*saliency.shape)
    positive, negative = np.maximum(saliency, 0.0), np.maximum(-saliency, 0.0)
    peak = np.unravel_index(np.argmax(saliency), saliency.shape)
    return {
        "positive_share": share_in(border, positive),
        "negative_share": share_in(border, negative),
        "positive_per_pixel_border": float(positive[border].mean()),
        "positive_per_pixel_centre": float(positive[~border].mean()),
        "peak_in_border": bool(border[peak]),
    }


def border_group(facts: list[dict]) -> dict:
    return {
        "films": len(facts),
        **{
            key: summary([f[key] for f in facts])
            for key in (
                "positive_share",
                "negative_share",
                "positive_per_pixel_border",
                "positive_per_pixel_centre",
            )
        },
        "peak_in_border": sum(f["peak_in_border"] for f in facts),
    }


def occluded_probability(classifier, tensor: np.ndarray, area: np.ndarray) -> float:
    """The probability with the pixels of `area` set to the input's mean, as the map does."""
    occluded = tensor.copy()
    occluded[0, area, 0] = explain.fill_value(tensor)
    return classifier.run(occluded)


def top_area(values: np.ndarray, share: float = DELETED) -> np.ndarray:
    """The `share` of pixels with the largest values (ties broken by position)."""
    count = round(share * values.size)
    order = np.argsort(-values, axis=None, kind="stable")[:count]
    area = np.zeros(values.size, dtype=bool)
    area[order] = True
    return area.reshape(values.shape)


def random_blob_area(rng, shape, grid: explain.Grid) -> np.ndarray:
    """The top DELETED of a random map on the explanation's grid, spread between the
    patch centres as the map is: random areas shaped like the map's own blobs."""
    rows, columns = grid.centres(shape[0]), grid.centres(shape[1])
    drops = rng.random((len(rows), len(columns)))
    smooth = explain.between_centres(drops, rows, columns, *shape)
    return top_area(smooth + 1e-6 * rng.random(shape))


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summary(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "p10": percentile(values, 10),
        "p90": percentile(values, 90),
    }


def time_device_path(classifier, paths, grid) -> dict:
    """Milliseconds per film: classify, then the heatmap written as infer.py --explain does
    (its map, then the heatmap sink)."""
    with tempfile.TemporaryDirectory() as folder:
        sink = Heatmaps(folder, classifier.threshold)
        classify_all(classifier, paths[:1], [sink], grid)  # warm-up
        total, mapping, cpu = [], [], []
        for path in paths:
            started, cpu_started = time.perf_counter(), time.process_time()
            film = classifier.classify_film(path)
            map_started = time.perf_counter()
            explanation = explain.occlusion_map(classifier, film.resized, grid)
            mapping.append(1000 * (time.perf_counter() - map_started))
            sink.add(film, explanation)
            total.append(1000 * (time.perf_counter() - started))
            cpu.append(1000 * (time.process_time() - cpu_started))

    def quantiles(values):
        return {"median": statistics.median(values), "p90": percentile(values, 90)}

    # CPU time next to wall time: on a shared machine the wall time also counts the
    # waits for a core, while at 1 thread the CPU time is what an idle device would take.
    return {
        "films": len(paths),
        "device_path_ms": quantiles(total),
        "device_path_cpu_ms": quantiles(cpu),
        "map_only_ms": quantiles(mapping),
    }


def invoke_time(classifier, path, runs: int = 300) -> dict:
    """The model run alone on one ready input (ms): what the map repeats once per patch,
    measured beside the films so a loaded machine can be told apart from slow code."""
    tensor = classifier.model_input(path)
    for _ in range(30):
        classifier.run(tensor)
    wall, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        classifier.run(tensor)
        wall.append(1000 * (time.perf_counter() - started))
        cpu.append(1000 * (time.process_time() - cpu_started))
    return {
        "median": statistics.median(wall),
        "p10": percentile(wall, 10),
        "cpu_mean": float(np.mean(cpu)),
    }


def random_model(folder: Path, data_root: Path, sidecar: dict, representative: int) -> Path:
    """The shipped architecture with re-initialised weights, as full int8 with a sidecar."""
    from edgexray.export import convert
    from edgexray.pipeline import data
    from edgexray.pipeline.model import build_model

    spec = {k: sidecar["input"][k] for k in ("height", "width", "normalization")}
    spec.update(
        channels=1,
        color="grayscale",
        resize="bilinear, aspect ratio not kept",
        value_range=[0.0, 1.0],
        layout="NHWC",
    )
    model = build_model(image_size=spec["height"], width=12, seed=SEED + 1)
    rng = np.random.default_rng(SEED)
    train = data.list_images(data_root / "train")
    chosen = [
        path
        for label in sorted(train)
        for path in rng.choice(train[label], representative // 2, replace=False)
    ]
    images = [data.model_input(str(path), spec) for path in chosen]
    path = folder / "random-int8.tflite"
    convert.write_tflite(
        convert.to_full_int8(model, images),
        path,
        method="int8",
        method_config={"representative_size": len(images)},
        input_spec=spec,
        threshold=0.5,
        target_recall=0.97,
        sparsity=0.0,
        output_kind=convert.output_kind(model),
    )
    return path


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1..end
    result = np.empty(len(values), dtype=np.float64)
    result[order] = np.repeat(average, ends - starts)
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation: Pearson's on the ranks."""
    return float(np.corrcoef(ranks(a.ravel()), ranks(b.ravel()))[0, 1])


def randomisation_check(classifier, films, data_root: Path, count: int, grid) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        randomised = Classifier(
            random_model(Path(folder), data_root, classifier.sidecar, 64), threads=1
        )
        rng = np.random.default_rng(SEED)
        chosen = [films[i] for i in sorted(rng.choice(len(films), count, replace=False))]
        rhos, constant = [], 0
        for path in chosen:
            gray = resized_grayscale(path, classifier.sidecar["input"])
            trained = explain.occlusion_map(classifier, gray, grid).saliency
            random = explain.occlusion_map(randomised, gray, grid).saliency
            if np.ptp(random) == 0:  # a constant map ranks nothing: no correlation
                constant += 1
                rhos.append(0.0)
                continue
            rhos.append(spearman(trained, random))
    return {
        "films": len(chosen),
        "random_maps_constant": constant,
        "spearman": summary(rhos),
        "abs_spearman_max": float(np.max(np.abs(rhos))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/chest_xray"))
    parser.add_argument("--model", type=Path, default=REFERENCE_MODEL)
    parser.add_argument("--random-films", type=int, default=40)
    parser.add_argument("--patch", type=int, default=None, help="default: the model's grid")
    parser.add_argument("--stride", type=int, default=None, help="default: the model's grid")
    parser.add_argument(
        "--part",
        choices=("all", "timing", "checks"),
        default="all",
        help="timing: only re-time (kept with the earlier checks); checks: keep the timing",
    )
    parser.add_argument(
        "--grids",
        default=",".join(f"{p}/{s}" for p, s in TIMED_GRIDS),
        help="grids to time, PATCH/STRIDE comma-separated",
    )
    parser.add_argument(
        "--timing-every", type=int, default=TIMED_EVERY, help="time every Nth film of test/"
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="the JSON file to read and write"
    )
    args = parser.parse_args()
    timed_grids = [tuple(map(int, g.split("/"))) for g in args.grids.split(",")]
    earlier = json.loads(args.results.read_text()) if args.results.is_file() else {}
    classifier = Classifier(args.model, threads=1)
    default = explain.input_grid(classifier.sidecar["input"])
    grid = explain.Grid(args.patch or default.patch, args.stride or default.stride)
    films = {
        label: readers.film_files(args.data / "test" / label) for label in ("NORMAL", "PNEUMONIA")
    }
    every_film = films["NORMAL"] + films["PNEUMONIA"]
    input_size = (classifier.sidecar["input"]["height"], classifier.sidecar["input"]["width"])
    # Every timing run is kept (with its load average): on a shared machine they differ.
    timings = earlier.get("timings", [])
    if args.part != "checks":
        timing = {"load_average_before": os.getloadavg()[0], "grids": []}
        for patch, stride in timed_grids:
            timed = explain.Grid(patch, stride)
            timing["grids"].append(
                {
                    "patch": patch,
                    "stride": stride,
                    "passes": timed.passes(*input_size),
                    **time_device_path(classifier, every_film[:: args.timing_every], timed),
                }
            )
        timing["load_average_after"] = os.getloadavg()[0]
        timing["invoke_ms"] = invoke_time(classifier, every_film[0])
        timing["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        timings = [*timings, timing] if args.part == "timing" else [timing]
    if args.part == "timing":
        _write(args.results, {**earlier, "timings": timings})
        return

    rng = np.random.default_rng(SEED)
    cpu, features = cpu_model_and_features()
    border = {"NORMAL": [], "PNEUMONIA": []}
    deletion = []
    for label, paths in films.items():
        for path in paths:
            gray = resized_grayscale(path, classifier.sidecar["input"])
            explanation = explain.occlusion_map(classifier, gray, grid)
            saliency = explanation.saliency
            called = explanation.probability >= classifier.threshold
            border[label].append({**border_facts(saliency), "called_pneumonia": called})
            if label != "PNEUMONIA":
                continue
            tensor = np.array(classifier.tensor_of(gray))
            top = explanation.probability - occluded_probability(
                classifier, tensor, top_area(saliency)
            )
            random = [
                explanation.probability
                - occluded_probability(classifier, tensor, random_blob_area(rng, gray.shape, grid))
                for _ in range(RANDOM_DRAWS)
            ]
            deletion.append(
                {
                    "top": top,
                    "random_mean": float(np.mean(random)),
                    "probability": explanation.probability,
                }
            )
    border_area = float(border_mask(*input_size).mean())
    results = {
        "model": str(args.model),
        "sha256": classifier.sidecar["sha256"],
        "grid": {"patch": grid.patch, "stride": grid.stride, "passes": grid.passes(*input_size)},
        "machine": {
            "cpu": cpu,
            "cpu_int8_features": features,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "timings": timings,
        "border": {
            "definition": f"outer {BORDER:.0%} of each side of the model input",
            "area_share": border_area,
            "normal": border_group(border["NORMAL"]),
            "pneumonia": border_group(border["PNEUMONIA"]),
            # The false alarms: normal films called pneumonia, against those called normal.
            "normal_called_pneumonia": border_group(
                [f for f in border["NORMAL"] if f["called_pneumonia"]]
            ),
            "normal_called_normal": border_group(
                [f for f in border["NORMAL"] if not f["called_pneumonia"]]
            ),
        },
        "deletion": {
            "films": len(deletion),
            "random_draws_per_film": RANDOM_DRAWS,
            "top_beats_random": sum(d["top"] > d["random_mean"] for d in deletion),
            "mean_drop_top": float(np.mean([d["top"] for d in deletion])),
            "mean_drop_random": float(np.mean([d["random_mean"] for d in deletion])),
            "median_drop_top": float(np.median([d["top"] for d in deletion])),
            "median_drop_random": float(np.median([d["random_mean"] for d in deletion])),
        },
    }
    results["randomisation"] = randomisation_check(
        classifier, every_film, args.data, args.random_films, grid
    )
    _write(args.results, results)


def _write(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
