"""Time scan, split and manifest on a large synthetic data tree (issue 14, item 3).

    python benchmarks/scan_many.py /tmp/edgexray-200k [--files 200000]

Makes TREE/train/{NORMAL,PNEUMONIA}/ of symlinks to the shared films first if it is not
there (Kaggle-style names, 2 films per patient), then times each step on it.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from edgexray.pipeline import data

SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared/data/chest_xray/train"


def make_tree(root: Path, files: int) -> None:
    for label in data.LABELS:
        films = sorted((SHARED_TRAIN / label).iterdir())
        folder = root / "train" / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(files // 2):
            patient = i // 2
            name = (
                f"IM-{patient:06d}-{i % 2 + 1:04d}.jpeg"
                if label == "NORMAL"
                else f"person{patient}_bacteria_{i}.jpeg"
            )
            os.symlink(films[i % len(films)], folder / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", type=Path)
    parser.add_argument("--files", type=int, default=200_000)
    args = parser.parse_args()
    if not args.tree.exists():
        started = time.perf_counter()
        make_tree(args.tree, args.files)
        print(f"made {args.files} symlinks in {time.perf_counter() - started:.1f} s")

    def timed(label, function, *arguments):
        started, cpu = time.perf_counter(), time.process_time()
        result = function(*arguments)
        print(
            f"{label}: {time.perf_counter() - started:.1f} s wall, "
            f"{time.process_time() - cpu:.1f} s CPU",
            flush=True,
        )
        return result

    root = args.tree.resolve()
    folders = timed("listing", data.find_class_folders, root)
    timed("listing files", lambda: [data.list_images(f) for f in folders.values()])
    samples, skipped = timed("scan (listing + decoding every file)", data.scan, root)
    print(f"  {len(samples)} samples, {len(skipped)} skipped")
    samples = timed("split_by_patient", data.split_by_patient, samples, 0.15, 0.15, 42)
    with tempfile.TemporaryDirectory() as folder:
        manifest = Path(folder) / "manifest.csv"
        timed("save_manifest", data.save_manifest, samples, manifest)
        timed("load_manifest", data.load_manifest, manifest)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
