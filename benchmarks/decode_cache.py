"""Decode cache and full-resolution films: stand-ins, per-film costs, bounded training runs.

Full-resolution originals are not on the benchmark machine, so the shared 224 px films
are upscaled to 1500 x 1200 single-channel JPEGs as stand-ins (written under --work, never
into ../shared), next to byte copies of the same 224 px films; pydicom's test data adds
one real full-resolution chest film (RG1_UNCR.dcm, a 1841 x 1955 CR).

    python benchmarks/decode_cache.py standins --work /work/tmp-data/decode-bench
    python benchmarks/decode_cache.py films --work /work/tmp-data/decode-bench
    python benchmarks/decode_cache.py train --data DIR --cache off|DIR --epochs 3
    python benchmarks/decode_cache.py pipeline --work /work/tmp-data/decode-bench
    python benchmarks/decode_cache.py table --work /work/tmp-data/decode-bench

`train` runs edgexray's own training (pipeline.train.train) once and prints one JSON line:
the scan (which decodes every film, and fills the cache), each epoch, and the whole call.
Results and commands: benchmarks/README.md, "Decode cache and full-resolution films".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data/chest_xray"  # ../shared
FULL_SIZE = (1500, 1200)  # width, height: a typical original's long side is 1000-2000 px
COUNTS = {"train": {"NORMAL": 150, "PNEUMONIA": 250}, "test": {"NORMAL": 40, "PNEUMONIA": 60}}


def standins(work: Path, shared: Path = SHARED, seed: int = 0) -> None:
    """work/small: byte copies of a seeded subset; work/full: the same films upscaled."""
    rng = np.random.default_rng(seed)
    for split, labels in COUNTS.items():
        for label, count in labels.items():
            files = sorted((shared / split / label).iterdir())
            for index in sorted(rng.choice(len(files), count, replace=False)):
                source = files[index]
                for kind in ("small", "full"):
                    (work / kind / split / label).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, work / "small" / split / label / source.name)
                with Image.open(source) as image:
                    large = image.convert("L").resize(FULL_SIZE, Image.Resampling.BICUBIC)
                    large.save(work / "full" / split / label / source.name, quality=90)
    real = work / "real"
    real.mkdir(parents=True, exist_ok=True)
    real_film().save(real / "RG1_UNCR.jpeg", quality=90)


def real_film() -> Image.Image:
    """pydicom's RG1_UNCR.dcm (a chest CR, MONOCHROME1, 15 bits) as an 8-bit film."""
    import pydicom
    from pydicom.data import get_testdata_file

    dataset = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    values = dataset.pixel_array.astype(np.float64)
    scaled = (values - values.min()) / max(values.max() - values.min(), 1) * 255
    if dataset.PhotometricInterpretation == "MONOCHROME1":  # bright = air: invert
        scaled = 255 - scaled
    return Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")


def _mean_ms(function, paths, repeat: int = 1) -> float:
    times = []
    for path in paths:
        for _ in range(repeat):
            started = time.perf_counter()
            function(path)
            times.append(time.perf_counter() - started)
    return 1000 * statistics.mean(times)


def films(work: Path, size: int = 128) -> list[dict]:
    """Per film: decode + resize, the cache's first call, a cache hit, the hash alone."""
    from edgexray.edge_runtime import readers
    from edgexray.edge_runtime.preprocess import resize
    from edgexray.pipeline import decode_cache

    rows = []
    spec = {"height": size, "width": size, "normalization": "equalize"}
    for kind in ("small", "full", "real"):
        paths = sorted((work / kind).rglob("*.jpeg"))[:200]
        cache = work / f"films-cache-{kind}"
        shutil.rmtree(cache, ignore_errors=True)
        os.environ["EDGEXRAY_CACHE"] = str(cache)
        repeat = 5 if kind == "real" else 1
        with Image.open(paths[0]) as image:
            shape = f"{image.width}x{image.height} {image.mode}"
        decode = _mean_ms(lambda p: resize(readers.read(p)[0], size, size), paths, repeat)
        cold = _mean_ms(
            lambda p: decode_cache.resized_grayscale(p, spec),
            paths[:1] if kind == "real" else paths,
        )
        warm = _mean_ms(lambda p: decode_cache.resized_grayscale(p, spec), paths, repeat)
        digest = _mean_ms(decode_cache._file_digest, paths, repeat)
        entries = list(cache.rglob("*.gray"))
        disk = sum(os.stat(p).st_blocks * 512 for p in entries)
        rows.append(
            {
                "films": kind,
                "n": len(paths),
                "size": shape,
                "file_kB": round(statistics.mean(p.stat().st_size for p in paths) / 1000, 1),
                "decode_resize_ms": round(decode, 2),
                "cache_first_call_ms": round(cold, 2),
                "cache_hit_ms": round(warm, 2),
                "sha256_ms": round(digest, 3),
                "entry_bytes": entries[0].stat().st_size,
                "disk_MB_per_1000": round(disk / len(entries) * 1000 / 1e6, 1),
            }
        )
    return rows


def pipeline(work: Path, epochs: int = 3, size: int = 128) -> list[dict]:
    """The training input pipeline alone (decode, site augmentation, batches; no model):
    seconds per epoch for each kind of film with the cache off and on (emptied first)."""
    from edgexray.pipeline import data

    rows = []
    for kind in ("small", "full"):
        paths = sorted(str(p) for p in (work / kind / "train").rglob("*.jpeg"))
        labels = [int("/PNEUMONIA/" in p) for p in paths]
        spec = {"height": size, "width": size, "normalization": "equalize"}
        for cache in ("off", str(work / f"pipeline-cache-{kind}")):
            shutil.rmtree(cache, ignore_errors=True)
            os.environ["EDGEXRAY_CACHE"] = cache
            dataset = data.make_dataset(
                paths, labels, spec, 32, training=True, seed=0, augmentation="site"
            )
            seconds = []
            for _ in range(epochs):
                started = time.monotonic()
                for _batch in dataset:
                    pass
                seconds.append(round(time.monotonic() - started, 2))
            rows.append(
                {
                    "films": kind,
                    "n": len(paths),
                    "cache": "off" if cache == "off" else "on",
                    "epochs_s": seconds,
                    "load": os.getloadavg()[0],
                }
            )
    return rows


def train_once(data: Path, cache: str, epochs: int, run_dir: Path) -> dict:
    """One bounded training with the decode cache set to `cache`; phase timings."""
    os.environ["EDGEXRAY_CACHE"] = cache
    from edgexray.compat import keras
    from edgexray.pipeline import data as data_module
    from edgexray.pipeline import finetune
    from edgexray.pipeline.train import TrainConfig, train

    marks: dict[str, float] = {}
    epoch_seconds: list[float] = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()

        def on_epoch_end(self, epoch, logs=None):
            epoch_seconds.append(time.monotonic() - self.started)

    scan, fit = data_module.scan, finetune.fit

    def timed_scan(*args, **kwargs):
        started = time.monotonic()
        result = scan(*args, **kwargs)
        marks["scan"] = time.monotonic() - started
        return result

    def timed_fit(*args, callbacks=(), **kwargs):
        return fit(*args, callbacks=[*callbacks, EpochTimer()], **kwargs)

    data_module.scan, finetune.fit = timed_scan, timed_fit
    config = TrainConfig(data=str(data), epochs=epochs, patience=epochs, seed=42)
    started = time.monotonic()
    train(config, run_dir, verbose=0)
    total = time.monotonic() - started
    return {
        "data": data.name,
        "cache": "off" if cache == "off" else "on",
        "scan_s": round(marks["scan"], 1),
        "epochs_s": [round(s, 1) for s in epoch_seconds],
        "total_s": round(total, 1),
        "config": {
            k: v
            for k, v in dataclasses.asdict(config).items()
            if k in ("image_size", "width", "batch_size")
        },
    }


def table(work: Path) -> list[str]:
    """benchmarks/README.md's table from work/train.jsonl: each run against the 224 px run
    with the cache off (today's code on today's data) of the same repetition."""
    runs, context = [], {}
    for line in (work / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "rep" in row:
            context = row
        else:
            runs.append({**row, **context})
    base = {r["rep"]: r for r in runs if r["data"] == "small" and r["cond"] == "off"}
    lines = [
        "| rep | films | cache | load at start | scan s | epoch 1 s | epochs 2-3 s (mean) "
        "| whole train() s | vs 224 px, cache off: epoch 1 / epochs 2-3 / whole |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["rep"], r["data"] != "small")):
        if r["rep"] not in base:  # that repetition has not reached its baseline yet
            continue
        b = base[r["rep"]]
        later, base_later = statistics.mean(r["epochs_s"][1:]), statistics.mean(b["epochs_s"][1:])
        ratios = (
            r["epochs_s"][0] / b["epochs_s"][0],
            later / base_later,
            r["total_s"] / b["total_s"],
        )
        films = "224 px copies" if r["data"] == "small" else "1500 px stand-ins"
        lines.append(
            f"| {r['rep']} | {films} | {r['cond']} | {r['load'].split()[0]} | {r['scan_s']} "
            f"| {r['epochs_s'][0]} | {later:.1f} | {r['total_s']} "
            f"| {' / '.join(f'{x:.2f}x' for x in ratios)} |"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("standins", "films", "table", "pipeline"):
        command = commands.add_parser(name)
        command.add_argument("--work", type=Path, required=True)
        command.add_argument("--shared", type=Path, default=SHARED, help="read-only films")
    run = commands.add_parser("train")
    run.add_argument("--data", type=Path, required=True)
    run.add_argument("--cache", required=True, help="off, or the cache folder")
    run.add_argument("--epochs", type=int, default=3)
    run.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "standins":
        standins(args.work, args.shared)
    elif args.command == "pipeline":
        for row in pipeline(args.work):
            print(json.dumps(row))
    elif args.command == "table":
        print("\n".join(table(args.work)))
    elif args.command == "films":
        for row in films(args.work):
            print(json.dumps(row))
    else:
        print(json.dumps(train_once(args.data, args.cache, args.epochs, args.run_dir)))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
