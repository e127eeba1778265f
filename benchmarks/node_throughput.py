"""Throughput and latency of the DICOM node (issue 21): dcmtk storescu clients push films.

    python benchmarks/node_throughput.py [--films 300] [--clients 4] [--size 96]
                                         [--large 20] [--large-size 2048]

Starts the node (reference model) on 127.0.0.1 with a fresh state folder, writes DICOM
films made from real test/ films (two sets: --films small 8-bit films of --size pixels
pushed by --clients concurrent storescu processes, then --large 16-bit films of
--large-size pixels, about what a CR/DX unit sends, from one client), and reports for each
set: films per second from the first push to the last record written, and the latency
from a film stored (its C-STORE answered) to its record (received_at to classified_at in
the record): median and p90. A third set sends the large films one by one, each after the
previous record: the latency of a film that finds no queue, as in a clinic where a unit
sends a film every minute or so. Needs dcmtk (storescu) and the node extra.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import node_support  # noqa: E402

from edgexray.edge_runtime import REFERENCE_MODEL  # noqa: E402
from edgexray.edge_runtime.node import spool  # noqa: E402
from edgexray.edge_runtime.node.config import NodeConfig  # noqa: E402
from edgexray.edge_runtime.node.server import Node  # noqa: E402


def large_films(folder: Path, count: int, size: int) -> list[Path]:
    """count 16-bit (12 bits stored) films of size x size, from the test/ films."""
    folder.mkdir(parents=True)
    sources = node_support.small_films(size)
    paths = []
    for i in range(count):
        pixels = sources[i % len(sources)].astype(np.uint16) * 16
        path = folder / f"large {i:03d}.dcm"
        node_support.write_film(
            path,
            np.zeros((1, 1), np.uint8),
            node_support.DX_IMAGE,
            BitsAllocated=16,
            BitsStored=12,
            HighBit=11,
            Rows=size,
            Columns=size,
            PixelData=pixels.tobytes(),
        )
        paths.append(path)
    return paths


def push(port: int, batches: list[list[Path]]) -> None:
    threads = [
        threading.Thread(target=node_support.storescu, args=(port, batch, f"MODALITY{i + 1}"))
        for i, batch in enumerate(batches)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure(running: Node, batches: list[list[Path]], state: Path, one_by_one=False) -> dict:
    """Push the batches (one client each) at once, or with one_by_one each film alone after
    the previous one's record (latency without a queue); the figures of their records."""
    before = len(_records(state))
    total = sum(len(b) for b in batches)
    started = time.time()
    for group in [[[film]] for film in batches[0]] if one_by_one else [batches]:
        push(running.address[1], group)
        if not running.wait_idle(3600):
            raise SystemExit("the node did not finish")
    records = _records(state)[before:]
    assert len(records) == total, (len(records), total)
    assert all("label" in r for r in records), [r.get("error") for r in records][:3]
    stamp = datetime.datetime.fromisoformat
    latency = [
        (stamp(r["classified_at"]) - stamp(r["received_at"])).total_seconds() * 1000
        for r in records
    ]
    last = max(stamp(r["classified_at"]).timestamp() for r in records)
    return {
        "films": total,
        "clients": len(batches),
        "seconds": round(last - started, 2),
        "films_per_second": round(total / (last - started), 1),
        "latency_ms_median": round(float(np.median(latency)), 1),
        "latency_ms_p90": round(float(np.percentile(latency, 90)), 1),
        "classify_ms_median": round(float(np.median([r["latency_ms"] for r in records])), 1),
    }


def _records(state: Path) -> list[dict]:
    path = state / spool.RESULTS
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--large", type=int, default=20)
    parser.add_argument("--large-size", type=int, default=2048)
    args = parser.parse_args()
    if not node_support.have_dcmtk():
        raise SystemExit(node_support.DCMTK_MISSING)
    with tempfile.TemporaryDirectory(prefix="node throughput ") as tmp:
        tmp = Path(tmp)
        small = list(node_support.write_films(tmp / "small", args.films, args.size).values())
        large = large_films(tmp / "large", args.large, args.large_size)
        alone = large_films(tmp / "alone", args.large, args.large_size)  # other UIDs
        state = tmp / "state"
        config = NodeConfig(
            model=REFERENCE_MODEL,
            state=state,
            host="127.0.0.1",
            port=0,
            allowed_aes=tuple(f"MODALITY{i + 1}" for i in range(max(args.clients, 1))),
        )
        running = Node(config).start()
        try:
            small_name = f"{args.films} films {args.size}x{args.size} 8-bit"
            large_name = f"{args.large} films {args.large_size}x{args.large_size} 12-bit"
            batches = [small[i :: args.clients] for i in range(args.clients)]
            rows = {
                f"{small_name}, {args.clients} clients": measure(running, batches, state),
                f"{large_name}, 1 client": measure(running, [large], state),
                f"{large_name}, one by one": measure(running, [alone], state, one_by_one=True),
            }
        finally:
            running.stop()
    print(
        f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}"
    )
    for name, row in rows.items():
        print(json.dumps({"set": name, **row}))


if __name__ == "__main__":
    main()
