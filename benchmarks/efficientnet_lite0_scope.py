"""The out-of-scope guard on EfficientNet-Lite0's 1280 features: choose its form on val (issue 34).

    nice -n 15 python benchmarks/efficientnet_lite0_scope.py export --head HEAD.npz
        --out DIR/int8.tflite [--weights FINETUNED.weights.h5] [--normalization equalize]
        [--data DIR]
        Lite0 (grey stem, ImageNet weights, 224 px) with the Dense head of
        efficientnet_lite0_recipe.py --head-out (or every weight from
        efficientnet_lite0_finetune.py train --out), converted to full int8 as
        `edgexray quantize` does (256 stratified train films calibrate it), its pooled
        features as output 1, the threshold chosen on val for recall >= 0.97, and a sidecar
        (no scope block yet).

    nice -n 15 python benchmarks/efficientnet_lite0_scope.py features --model DIR/int8.tflite
        --out DIR/scope-features.npz [--data DIR]
        The model's int8 features, as the device computes them, of the train and val films
        and of every group of images that must be refused, built from val films and from
        the packaged images of benchmarks/scope_check.py; with each image's cheap-check
        reason (tags, colour, flat), which comes before the distance.

    python benchmarks/efficientnet_lite0_scope.py analyse DIR/scope-features.npz [--out FILE]
        For each form of the scope block (pipeline/scope.py `fit`: k leading components
        and one residual variance, or the full covariance at k = 1280) and, to show what
        the residual term does, the k components alone: the cut-off chosen on val (>= 99%
        within) and the share of each group refused, and the block's size in the sidecar.
        Also, as a candidate check the guard does not have: a film refused when its own
        negative (255 - grey) lies closer to the training films than it does; scored on
        the val films and their negatives (one more model run per film on a device).

    nice -n 15 python benchmarks/efficientnet_lite0_scope.py attach --model DIR/int8.tflite
        [--components K] [--data DIR]
        Fit the chosen block into the model's sidecar (as `edgexray quantize` would);
        then `scope_check.py measure --model DIR/int8.tflite` gives the usual table.

    python benchmarks/efficientnet_lite0_scope.py lungs [--data DIR]
        A cheap negative-film rule, measured but not proposed: the mean grey of the two lung
        bands (1/8 to 3/8 and 5/8 to 7/8 of the width) minus the central band (7/16 to
        9/16), over the middle half of the rows of each resized train and val film (a
        negative has the opposite sign).

The choice reads val and the refusal groups only. test/ films are not read here;
scope_check.py measure reads them, after the choice.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import scope_check  # noqa: E402
from scope_check import DEFAULT_DATA, Film, counts_of, recorded_split  # noqa: E402

from edgexray.edge_runtime import readers  # noqa: E402
from edgexray.edge_runtime import scope as guard  # noqa: E402
from edgexray.edge_runtime.classifier import Classifier  # noqa: E402
from edgexray.edge_runtime.preprocess import resize  # noqa: E402
from edgexray.pipeline import data, metrics, scope, scoring  # noqa: E402

SIZE = 224
REPRESENTATIVE = 256  # QuantizeConfig's default representative_size
COMPONENTS = (8, 16, 32, 48, 64, 96, 128, 175, 256, 324, 512)
COVERAGE = scope.COVERAGE


def input_spec(normalization: str) -> dict:
    """TrainConfig.input_spec at 224 px."""
    return {
        "height": SIZE,
        "width": SIZE,
        "channels": 1,
        "color": "grayscale",
        "resize": "bilinear, aspect ratio not kept",
        "normalization": normalization,
        "value_range": [0.0, 1.0],
        "layout": "NHWC",
    }


def export(head: Path, out: Path, normalization: str, data_root: Path, weights=None) -> None:
    from edgexray.compat import tf
    from edgexray.export import convert
    from edgexray.export.features import with_feature_output
    from edgexray.export.quantize import representative_paths
    from edgexray.pipeline.backbones import efficientnet_lite

    tf.config.threading.set_intra_op_parallelism_threads(2)
    samples = recorded_split(data_root)
    spec = input_spec(normalization)
    stored = np.load(head)
    model = efficientnet_lite.build(SIZE, channels=1, classes=1)
    efficientnet_lite.load_imagenet_weights(model)
    model.get_layer("logits").set_weights(
        [stored["kernel"].reshape(-1, 1).astype(np.float32), np.array([float(stored["bias"])])]
    )
    if weights is not None:
        model.load_weights(weights)
    train_paths, train_labels = data.select(samples, "train", data_root)
    chosen = representative_paths(train_paths, train_labels, REPRESENTATIVE, 42)
    started = time.monotonic()
    tflite = convert.to_full_int8(model, [scoring.decode(p, spec) for p in chosen])
    tflite = with_feature_output(tflite)
    print(f"converted in {time.monotonic() - started:.0f} s: {len(tflite)} bytes")
    val_paths, val_labels = data.select(samples, "val", data_root)
    val_images = [scoring.decode(p, spec) for p in val_paths]
    probabilities = scoring.tflite_scorer(tflite, spec, "int8", "logit").probabilities(val_images)
    threshold = metrics.threshold_for_recall(val_labels, probabilities, 0.97)
    report = metrics.classification_report(val_labels, probabilities, threshold)
    print(f"int8 val AUC {report['auc']:.4f}, specificity {report['specificity']:.4f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    convert.write_tflite(
        tflite,
        out,
        method="int8",
        method_config={
            "backbone": "efficientnet-lite0, ImageNet weights"
            + (f", fine-tuned: {Path(weights).name}" if weights else ", frozen"),
            "head": json.loads(str(stored["chosen"])),
            "representative_size": len(chosen),
        },
        input_spec=spec,
        threshold=threshold,
        target_recall=0.97,
        sparsity=0.0,
        output_kind="logit",
        check_image=val_images[0],
    )


# --- the refusal groups, from val films and packaged images ---------------------------


def groups(samples, data_root: Path, rng) -> dict[str, list[Film]]:
    """scope_check.groups with val films where it takes test/ films."""
    val_paths, _ = data.select(samples, "val", data_root)

    def films_of(paths, change=lambda gray: gray):
        return [Film(Path(p).name, change(readers.read(p)[0])) for p in paths]

    def packaged(table):
        return [film for name, frames in table for film in scope_check.dicom_films(name, frames)]

    return {
        "val films inverted (negatives)": films_of(val_paths, lambda g: 255 - g),
        "other body parts: RG3, a leg (CR)": packaged(scope_check.OTHER_RADIOGRAPHS),
        "CT and MR slices": packaged(scope_check.CT_MR) + [scope_check.matplotlib_mr()],
        "nuclear medicine (NM whole-body bone)": packaged(scope_check.NUCLEAR),
        "photographs (scikit-image, matplotlib)": scope_check.photographs(),
        "blank and noise": scope_check.synthetic(rng),
        "val films cropped to 1/4 of each side": scope_check.cropped(val_paths, rng, 0.25),
        "val films cropped to 1/2 of each side": scope_check.cropped(val_paths, rng, 0.5),
        "adult chest: RG1 (CR, PA, aged 64)": packaged(scope_check.ADULT_CHEST),
    }


def film_features(classifier: Classifier, films: list[Film]) -> tuple[np.ndarray, list]:
    """Each film's int8 features and the reason a cheap check refuses it (or "")."""
    spec = classifier.sidecar["input"]
    rows, reasons = [], []
    for film in films:
        gray = resize(film.gray, int(spec["height"]), int(spec["width"]))
        classifier.run(classifier.tensor_of(gray))
        rows.append(classifier.features())
        cheap = guard.decide(gray, None, None, colour=film.colour, tags=film.tags)
        reasons.append(cheap.reason if cheap.in_scope is False else "")
    return np.array(rows, dtype=np.float32), reasons


def features(model: Path, out: Path, data_root: Path) -> None:
    samples = recorded_split(data_root)
    classifier = Classifier(model, check_scope=False)
    spec = classifier.sidecar["input"]
    arrays, reasons = {}, {}
    for split in ("train", "val"):
        paths, _ = data.select(samples, split, data_root)
        started = time.monotonic()
        grays = scope.resized(paths, spec)
        arrays[split] = scope.features_of(classifier, grays).astype(np.float32)
        print(f"{split}: {len(paths)} films in {time.monotonic() - started:.0f} s", flush=True)
    for name, films in groups(samples, data_root, np.random.default_rng(18)).items():
        arrays[name], reasons[name] = film_features(classifier, films)
        print(f"{name}: {len(films)}", flush=True)
    counts = {split: counts_of(samples, split) for split in ("train", "val")}
    record = {"model": str(model), "reasons": reasons, "counts": counts}
    np.savez(out, record=json.dumps(record), **arrays)


# --- the choice --------------------------------------------------------------------------


def block_bytes(block: dict) -> int:
    """The block's size as the sidecar holds it (numbers on one line per list)."""
    from edgexray.edge_runtime.metadata import sidecar_text

    return len(sidecar_text({"scope": block}).encode())


def refused_share(statistics: guard.Statistics, features, reasons) -> float:
    distances = np.array([statistics.distance(f) for f in features])
    refused = np.array([bool(r) for r in reasons]) | ~(distances <= statistics.cutoff)
    return float(refused.mean())


NEGATIVES = "val films inverted (negatives)"  # in the order of the val films


def negative_check(statistics: guard.Statistics, val, negatives) -> dict:
    """A film is refused when its negative is closer to the training films than it is."""
    films = np.array([statistics.distance(f) for f in val])
    inverted = np.array([statistics.distance(f) for f in negatives])
    return {
        "val_refused_by_it": round(float(np.mean(films > inverted)), 4),
        "val_refused_with_cutoff": round(
            float(np.mean((films > inverted) | ~(films <= statistics.cutoff))), 4
        ),
        "negatives_refused_with_cutoff": round(
            float(np.mean((inverted > films) | ~(inverted <= statistics.cutoff))), 4
        ),
    }


def analyse(cache: Path, out: Path | None) -> None:
    stored = np.load(cache)
    record = json.loads(str(stored["record"]))
    train, val = stored["train"].astype(np.float64), stored["val"].astype(np.float64)
    output = {"index": 1, "name": "pooled_features", "size": train.shape[1]}
    names = list(record["reasons"])
    forms = [("subspace + residual", k) for k in COMPONENTS] + [("full", train.shape[1])]
    forms += [("subspace alone", k) for k in (32, 64, 128, 324)]
    rows = []
    print(
        f"{'form':22s} {'k':>5} {'KB':>7} "
        + " ".join(f"{n[:14]:>14s}" for n in names)
        + "   negative check: val, negatives refused"
    )
    for form, k in forms:
        started = time.monotonic()
        block = scope.fit(train, val, output, components=k)
        if form == "subspace alone":  # the residual term dropped: a scope/1 block of k rows
            dropped = guard.SCOPE_SCHEMAS[guard.SUBSPACE_SCHEMA]
            block = {key: value for key, value in block.items() if key not in dropped}
            block["schema"] = guard.SCOPE_SCHEMA
            statistics = guard.Statistics.of(block)
            distances = np.array([statistics.distance(f) for f in val])
            block["cutoff"] = scope.cutoff_for(distances, COVERAGE)[0]
        statistics = guard.Statistics.of(block)
        val_within = np.mean([statistics.distance(f) <= statistics.cutoff for f in val])
        row = {
            "form": form,
            "components": k,
            "block_bytes": block_bytes(block),
            "cutoff": round(statistics.cutoff, 3),
            "val_within": round(float(val_within), 4),
            "refused": {
                name: round(refused_share(statistics, stored[name], record["reasons"][name]), 4)
                for name in names
            },
            "negative_closer_check": negative_check(statistics, val, stored[NEGATIVES]),
            "fit_seconds": round(time.monotonic() - started, 1),
        }
        rows.append(row)
        shares = " ".join(f"{row['refused'][n]:14.3f}" for n in names)
        check = row["negative_closer_check"]
        print(
            f"{form:22s} {k:5d} {row['block_bytes'] / 1024:7.0f} {shares}   "
            f"{check['val_refused_with_cutoff']:.4f} {check['negatives_refused_with_cutoff']:.4f}",
            flush=True,
        )
    sizes = {name: int(len(stored[name])) for name in names}
    if out:
        result = {"model": record["model"], "group_sizes": sizes, "forms": rows}
        out.write_text(json.dumps(result, indent=1) + "\n")


def attach(model: Path, components: int | None, data_root: Path) -> None:
    samples = recorded_split(data_root)
    spec = Classifier(model, check_scope=False).sidecar["input"]
    paths = {split: data.select(samples, split, data_root)[0] for split in ("train", "val")}
    block = scope.attach(
        model,
        scope.resized(paths["train"], spec),
        scope.resized(paths["val"], spec),
        train_counts=counts_of(samples, "train"),
        val_counts=counts_of(samples, "val"),
        components=components,
    )
    print(f"{block['schema']}: cut-off {block['cutoff']:.4f}, {block['cutoff_rule']}")


def lung_contrast(gray: np.ndarray) -> float:
    """Lung bands minus the mediastinum band, in grey levels (negative on a film)."""
    g = gray.astype(np.float64)
    height, width = g.shape
    rows = slice(height // 4, 3 * height // 4)
    left = g[rows, width // 8 : 3 * width // 8].mean()
    right = g[rows, 5 * width // 8 : 7 * width // 8].mean()
    return float((left + right) / 2 - g[rows, 7 * width // 16 : 9 * width // 16].mean())


def lungs(data_root: Path) -> None:
    samples = recorded_split(data_root)
    for split in ("train", "val"):
        paths, _ = data.select(samples, split, data_root)
        values = np.array([lung_contrast(g) for g in scope.resized(paths, input_spec("scale"))])
        print(
            f"{split}: {len(values)} films, largest {values.max():.2f}, median "
            f"{np.median(values):.2f}, at or above 0: {int(np.sum(values >= 0))}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("export", "features", "analyse", "attach", "lungs"))
    parser.add_argument("cache", type=Path, nargs="?")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--head", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--normalization", default="equalize")
    parser.add_argument("--components", type=int, default=None)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.action == "export":
        export(args.head, args.out, args.normalization, args.data, args.weights)
    elif args.action == "features":
        features(args.model, args.out, args.data)
    elif args.action == "analyse":
        analyse(args.cache, args.out)
    elif args.action == "lungs":
        lungs(args.data)
    else:
        attach(args.model, args.components, args.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
