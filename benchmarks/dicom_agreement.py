"""Does a film read as DICOM get the probability of the same film as PNG?

Every test/ film (as the project reads it: 8-bit grey) is written as an 8-bit PNG and as
DICOM files the way X-ray units export them: uncompressed in 12 and 16 bits, MONOCHROME1
and MONOCHROME2, with and without a window, with a rescale slope and intercept, and
compressed lossless (RLE, JPEG lossless, JPEG 2000, JPEG-LS) and lossy (JPEG baseline,
JPEG 2000). Each file is classified with the reference model through infer.py's own reader
(edge_runtime/dicom.py's rendering rule); lossless encodings must give probabilities
IDENTICAL to the PNG's, the lossy ones' differences are reported (max |dp|, label flips at
the model's threshold). The DICOM writers are the tests' (tests/dicom_support.py).

    nice -n 10 python benchmarks/dicom_agreement.py [--data ../shared/data/chest_xray/test]

Writes benchmarks/results/dicom_agreement.json and prints one row per encoding.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # dicom_support: the tests' DICOM writers

RESULTS = Path(__file__).resolve().parent / "results" / "dicom_agreement.json"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "chest_xray" / "test"


def encodings() -> dict:
    """name -> (lossless?, write(path, film))."""
    import pydicom
    from dicom_support import (
        secondary_capture,
        write_film,
        write_jpeg_baseline,
        write_jpeg_lossless,
    )
    from pydicom.uid import JPEG2000, JPEG2000Lossless, JPEGLSLossless, RLELossless

    def j2k_lossy(ratio):
        def write(path, film):
            write_film(path, film, bits=12)
            ds = pydicom.dcmread(path)
            ds.compress(JPEG2000, j2k_cr=[ratio])
            ds.save_as(path)

        return write

    def capture(path, film):
        secondary_capture(film).save_as(path, enforce_file_format=True)

    return {
        "uncompressed 16-bit MONOCHROME2, no window": (
            True,
            lambda p, f: write_film(p, f, bits=16),
        ),
        "uncompressed 12-bit MONOCHROME1, window": (
            True,
            lambda p, f: write_film(p, f, bits=12, monochrome1=True, window=True),
        ),
        "uncompressed 16-bit MONOCHROME2, rescale 2/-1024, window": (
            True,
            lambda p, f: write_film(p, f, bits=16, window=True, rescale=(2.0, -1024.0)),
        ),
        "uncompressed 8-bit secondary capture": (True, capture),
        "RLE lossless 12-bit MONOCHROME1": (
            True,
            lambda p, f: write_film(p, f, RLELossless, bits=12, monochrome1=True),
        ),
        "JPEG lossless (SV1) 16-bit, window": (
            True,
            lambda p, f: write_jpeg_lossless(p, f, bits=16, window=True),
        ),
        "JPEG 2000 lossless 12-bit MONOCHROME1, window": (
            True,
            lambda p, f: write_film(p, f, JPEG2000Lossless, bits=12, monochrome1=True, window=True),
        ),
        "JPEG-LS lossless 16-bit": (True, lambda p, f: write_film(p, f, JPEGLSLossless, bits=16)),
        "JPEG baseline 8-bit, quality 90": (
            False,
            lambda p, f: write_jpeg_baseline(p, f, quality=90),
        ),
        "JPEG baseline 8-bit, quality 75": (
            False,
            lambda p, f: write_jpeg_baseline(p, f, quality=75),
        ),
        "JPEG 2000 lossy 12-bit, ratio 10": (False, j2k_lossy(10)),
        "JPEG 2000 lossy 12-bit, ratio 20": (False, j2k_lossy(20)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NORMAL/ PNEUMONIA/")
    parser.add_argument("--limit", type=int, default=None, help="only the first N films")
    args = parser.parse_args()

    from edgexray.edge_runtime import REFERENCE_MODEL, readers
    from edgexray.edge_runtime.classifier import Classifier
    from edgexray.edge_runtime.errors import ImageError

    classifier = Classifier(REFERENCE_MODEL)
    films = [p for label in ("NORMAL", "PNEUMONIA") for p in readers.film_files(args.data / label)]
    films = films[: args.limit]
    table = encodings()
    rows = {
        name: {"lossless": lossless, "probabilities": [], "same_film": 0, "errors": []}
        for name, (lossless, _) in table.items()
    }
    reference = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dicom agreement ") as work:
        work = Path(work)
        for film_path in films:
            film = readers.read(film_path)[0]
            png = work / "film.png"
            Image.fromarray(film).save(png)
            reference.append(classifier.probability(png))
            for name, (_, write) in table.items():
                path = work / "film.dcm"
                write(path, film)
                try:
                    rendered = readers.read(path)[0]
                    rows[name]["probabilities"].append(classifier.probability(path))
                except ImageError as err:
                    rows[name]["errors"].append(f"{film_path.name}: {err}")
                    rows[name]["probabilities"].append(float("nan"))
                    continue
                rows[name]["same_film"] += bool(np.array_equal(rendered, film))
    reference = np.array(reference)
    threshold = classifier.threshold
    summary = []
    for name, row in rows.items():
        got = np.array(row["probabilities"])
        delta = np.abs(got - reference)
        flips = int(np.sum((got >= threshold) != (reference >= threshold)))
        summary.append(
            {
                "encoding": name,
                "lossless": row["lossless"],
                "films": len(films),
                "identical_probability": int(np.sum(got == reference)),
                "identical_8bit_film": row["same_film"],
                "max_abs_dp": float(np.nanmax(delta)),
                "mean_abs_dp": float(np.nanmean(delta)),
                "label_flips": flips,
                "errors": row["errors"],
            }
        )
    result = {
        "data": str(args.data),
        "model": REFERENCE_MODEL.name,
        "threshold": threshold,
        "seconds": round(time.perf_counter() - started, 1),
        "rows": summary,
    }
    from edgexray.artifacts import atomic_write

    if args.limit is None:
        atomic_write(RESULTS, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    print(
        f"{len(films)} films of {args.data}, model {REFERENCE_MODEL.name}, threshold "
        f"{threshold:.4f}, {result['seconds']} s"
    )
    print("| encoding | identical p | identical film | max abs dp | label flips |")
    print("|---|---|---|---|---|")
    for row in summary:
        n = row["films"]
        print(
            f"| {row['encoding']} | {row['identical_probability']}/{n} | "
            f"{row['identical_8bit_film']}/{n} | {row['max_abs_dp']:.4f} | "
            f"{row['label_flips']} |"
        )
    bad = [r for r in summary if r["lossless"] and r["identical_probability"] != r["films"]]
    if bad or any(r["errors"] for r in summary):
        sys.exit("error: a lossless encoding disagreed with the PNG, or a file was unreadable")


if __name__ == "__main__":
    main()
