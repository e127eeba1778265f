"""How long `edgexray data download` takes, and how much disk it needs, apart from the network.

No dataset host is reachable from the machines this was built on, so the archive is a
stand-in of the real one's shape: every film of ../shared (train/ and test/, plus 16 train
films as val/, 5544 films), upscaled to 1500 x 1200 single-channel JPEGs (the originals
are 1000-2000 px) at a quality that gives the real archive's size (about 1.2 GB), zipped
under chest_xray/ as Mendeley's ChestXRay2017.zip is. A server on 127.0.0.1 serves it and
the real command fetches it with --url, so everything but the network is measured: the
transfer at loopback speed, the sha256, the checks and the extraction, and the peak disk.

    python benchmarks/download_time.py archive --work /work/tmp-data/download-bench
    python benchmarks/download_time.py time --work /work/tmp-data/download-bench

Results: benchmarks/README.md, "Data download"; the time at your bandwidth is this plus
the archive size over the bandwidth.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared/data/chest_xray"  # ../shared
ARCHIVE = "ChestXRay2017.zip"
FULL_SIZE = (1500, 1200)  # width, height
QUALITY = 95  # upscaled films are smoother than real ones: this brings the size near 1.2 GB
VAL_FILMS = 8  # per class, as the official val/ folder


def build_archive(work: Path, shared: Path) -> Path:
    """work/ChestXRay2017.zip from the shared films, upscaled (stored: JPEGs do not deflate)."""
    work.mkdir(parents=True, exist_ok=True)
    target = work / ARCHIVE
    partial = target.with_suffix(".partial")
    members = []
    for split in ("train", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            files = sorted(p for p in (shared / split / label).iterdir() if p.is_file())
            members += [(f"chest_xray/{split}/{label}/{p.name}", p) for p in files]
            if split == "train":
                members += [(f"chest_xray/val/{label}/{p.name}", p) for p in files[:VAL_FILMS]]
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
        for number, (name, source) in enumerate(members, 1):
            with Image.open(source) as image:
                large = image.convert("L").resize(FULL_SIZE, Image.Resampling.BICUBIC)
            path = work / "film.jpeg"
            large.save(path, quality=QUALITY)
            archive.write(path, name)
            if number % 500 == 0:
                print(f"{number}/{len(members)} films", file=sys.stderr)
    (work / "film.jpeg").unlink()
    partial.replace(target)
    print(f"{target}: {len(members)} films, {target.stat().st_size / 1e9:.2f} GB")
    return target


def disk_use(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:  # renamed or removed while walking
                pass
    return total


def time_download(work: Path) -> dict:
    """Serve work/ on 127.0.0.1 and time `edgexray data download --url` into work/out."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    handler = functools.partial(QuietHandler, directory=str(work))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{ARCHIVE}"
    command = ["edgexray", "data", "download", "--url", url, "--out", str(out)]
    peak, started = 0, time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    while process.poll() is None:
        peak = max(peak, disk_use(out)) if out.exists() else peak
        time.sleep(0.5)
    wall = time.perf_counter() - started
    server.shutdown()
    if process.returncode != 0:
        raise SystemExit(f"download exited {process.returncode}")
    films = sum(1 for _ in (out / "chest_xray").rglob("*.jpeg"))
    return {
        "command": " ".join(command[:4] + ["http://127.0.0.1:PORT/" + ARCHIVE] + command[5:]),
        "archive_gb": (work / ARCHIVE).stat().st_size / 1e9,
        "films": films,
        "wall_s": round(wall, 1),
        "peak_disk_gb": round(peak / 1e9, 2),
        "final_disk_gb": round(disk_use(out) / 1e9, 2),
        "load_average_after": os.getloadavg()[0],
        "stdout": process.stdout.read().decode(errors="replace").strip().splitlines(),
    }


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # one line per request would drown the result
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("archive", "time"))
    parser.add_argument("--work", type=Path, required=True, help="a folder outside ../shared")
    parser.add_argument("--data", type=Path, default=SHARED)
    args = parser.parse_args()
    if args.step == "archive":
        build_archive(args.work, args.data)
    else:
        print(json.dumps(time_download(args.work), indent=1))


if __name__ == "__main__":
    main()
