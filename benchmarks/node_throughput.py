"""Throughput and latency of the DICOM node with Orthanc as the PACS (issues 21 and 28).

    python benchmarks/node_throughput.py [--films 300] [--clients 4] [--size 96]
        [--alone 20] [--alone-size 2048] [--no-explain] [--orthanc-nodelay]

Starts Orthanc (Debian package; tests/orthanc_support.py: its own folder, on 127.0.0.1)
and the node (reference model, in this process) with --pacs ORTHANC and --explain, then
pushes two sets of DICOM films made from real test/ films with dcmtk's storescu:

1. --films small 8-bit films of --size pixels from --clients storescu processes at once;
2. --alone 16-bit (12 bits stored) films of --alone-size pixels, about what a CR/DX unit
   sends, each after the previous one's results are in Orthanc: a film that finds no queue.

For each set: films per second from the first push to the last report (and to the last
heatmap) in Orthanc; the latency from a film stored (its C-STORE answered: the record's
received_at) to its report, and to its heatmap, in Orthanc (median, p95, max), Orthanc's
arrival seen by polling its /changes every 50 ms; lost (a film without its report or
heatmap in Orthanc) and duplicated (a film with two, or an object stored twice by the
node); CPU seconds of the node's process and of Orthanc. --orthanc-nodelay runs Orthanc
with TCP_NODELAY=1 (dcmtk then answers each store at once instead of after the client's
delayed ACK). Needs dcmtk, orthanc and the node extra.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import node_support  # noqa: E402
import orthanc_support  # noqa: E402

from edgexray.edge_runtime import REFERENCE_MODEL  # noqa: E402
from edgexray.edge_runtime.node import spool  # noqa: E402
from edgexray.edge_runtime.node.config import Destination, NodeConfig  # noqa: E402
from edgexray.edge_runtime.node.outbox import wants_heatmap  # noqa: E402
from edgexray.edge_runtime.node.server import Node  # noqa: E402

REPORT_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
POLL = 0.05


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


class Arrivals:
    """Orthanc's new instances, each with the time it was first seen (polling /changes)."""

    def __init__(self, pacs: orthanc_support.Orthanc):
        self.pacs, self.seen, self._last, self._known = pacs, {}, 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> Arrivals:
        self._last = self.pacs.get("/changes?last")["Last"]
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        while not self._stop.is_set():
            changes = self.pacs.get(f"/changes?since={self._last}&limit=1000")
            now = time.time()
            for change in changes["Changes"]:
                if change["ChangeType"] == "NewInstance":
                    self.seen.setdefault(change["ID"], now)
            self._last = changes["Last"]
            if changes["Done"]:
                time.sleep(POLL)

    def results(self) -> dict[str, dict[str, list[float]]]:
        """{film SOP Instance UID: {"report": [times], "heatmap": [times]}}."""
        found: dict = collections.defaultdict(lambda: {"report": [], "heatmap": []})
        for instance, when in list(self.seen.items()):
            if instance not in self._known:
                tags = self.pacs.get(f"/instances/{instance}/simplified-tags")
                kind = "report" if tags["SOPClassUID"] == REPORT_CLASS else "heatmap"
                self._known[instance] = (kind, source_in(tags))
            kind, film = self._known[instance]
            found[film][kind].append(when)
        return found


def source_in(tags: dict) -> str:
    """The film a report or heatmap refers to, from Orthanc's simplified tags."""
    if "CurrentRequestedProcedureEvidenceSequence" in tags:
        series = tags["CurrentRequestedProcedureEvidenceSequence"][0]["ReferencedSeriesSequence"]
        return series[0]["ReferencedSOPSequence"][0]["ReferencedSOPInstanceUID"]
    return tags["SourceImageSequence"][0]["ReferencedSOPInstanceUID"]


class NodeLog:
    """The node's log lines, its heatmap process's included (a process of its own, which
    logs to stderr): stderr goes to a file meanwhile. `stores()` counts how many times
    each object was stored at the PACS ("sent NAME to ...")."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> NodeLog:
        sys.stderr.flush()
        self._saved = os.dup(2)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(descriptor, 2)
        os.close(descriptor)
        logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", force=True)
        logging.getLogger("edgexray.node").setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)

    def stores(self) -> collections.Counter:
        sent = re.findall(r" INFO sent (\S+) to ", self.path.read_text(errors="replace"))
        return collections.Counter(sent)


def push(port: int, batches: list[list[Path]]) -> None:
    threads = [
        threading.Thread(target=node_support.storescu, args=(port, batch, f"MODALITY{i + 1}"))
        for i, batch in enumerate(batches)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def uids_of(paths: list[Path]) -> list[str]:
    from pydicom import dcmread

    return [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]


def measure(running, arrivals, batches, state, explain, one_by_one, cpu) -> dict:
    """Push the batches (one client each) at once, or with one_by_one each film alone after
    the previous one's results are in Orthanc; the figures of the set. cpu() gives the
    processes' CPU seconds, read when the last result arrived."""
    cpu_before = cpu()
    films = [film for batch in batches for film in batch]
    uids = set(uids_of(films))
    wanted = ("report", "heatmap") if explain else ("report",)
    started = time.time()
    for group in [[[film]] for film in films] if one_by_one else [batches]:
        before = len(arrivals.seen)
        push(running.address[1], group)
        if not running.wait_idle(1800):
            raise SystemExit("the node did not finish")
        group_uids = set(uids_of([f for batch in group for f in batch]))
        records = [r for r in _records(state) if r["sop_instance_uid"] in group_uids]
        expected = len(records) + (sum(wants_heatmap(r) for r in records) if explain else 0)
        deadline = time.time() + 1800
        while len(arrivals.seen) - before < expected:
            if time.time() > deadline:
                raise SystemExit("results did not all reach Orthanc in 30 minutes")
            time.sleep(0.1)
    cpu_used = {key: round(seconds - cpu_before[key], 1) for key, seconds in cpu().items()}
    got = arrivals.results()
    records = {r["sop_instance_uid"]: r for r in _records(state) if r["sop_instance_uid"] in uids}
    stamp = datetime.datetime.fromisoformat
    row = {"films": len(films), "clients": 1 if one_by_one else len(batches)}
    for kind in wanted:
        due = [uid for uid in uids if kind == "report" or wants_heatmap(records[uid])]
        latency = [
            (got[uid][kind][0] - stamp(records[uid]["received_at"]).timestamp()) * 1000
            for uid in due
            if got[uid][kind]
        ]
        last = max(got[uid][kind][0] for uid in due if got[uid][kind])
        row[f"{kind}s_per_second"] = round(len(latency) / (last - started), 2)
        row[f"{kind}_latency_ms"] = {
            "median": round(float(np.median(latency))),
            "p95": round(float(np.percentile(latency, 95))),
            "max": round(float(np.max(latency))),
        }
        row[f"{kind}s_lost"] = sum(1 for uid in due if not got[uid][kind])
        row[f"{kind}s_duplicated"] = sum(1 for uid in due if len(got[uid][kind]) > 1)
    row["no_heatmap_out_of_scope"] = sum(1 for r in records.values() if not wants_heatmap(r))
    classify = [r["latency_ms"] for r in records.values() if "latency_ms" in r]
    row["classify_ms_median"] = round(float(np.median(classify)), 1)
    row.update({f"{key}_cpu_s": seconds for key, seconds in cpu_used.items()})
    return row


def _records(state: Path) -> list[dict]:
    path = state / spool.RESULTS
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def orthanc_pid(pacs: orthanc_support.Orthanc) -> int | None:
    found = subprocess.run(["pgrep", "-P", str(pacs.process.pid)], capture_output=True, text=True)
    for pid in found.stdout.split():
        if "Orthanc" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            return int(pid)
    return None


def machine() -> str:
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line),
        platform.processor() or "cpu",
    )
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--alone", type=int, default=20)
    parser.add_argument("--alone-size", type=int, default=2048)
    parser.add_argument("--no-explain", action="store_true", help="reports only, no heatmaps")
    parser.add_argument("--orthanc-nodelay", action="store_true")
    args = parser.parse_args()
    if not node_support.have_dcmtk():
        raise SystemExit(node_support.DCMTK_MISSING)
    if not orthanc_support.available():
        raise SystemExit(orthanc_support.MISSING)
    explain = not args.no_explain
    with tempfile.TemporaryDirectory(prefix="node throughput ") as tmp:
        tmp = Path(tmp)
        node_log = NodeLog(tmp / "node.log")
        small = list(node_support.write_films(tmp / "small", args.films, args.size).values())
        alone = large_films(tmp / "alone", args.alone, args.alone_size) if args.alone else []
        pacs = orthanc_support.Orthanc(tmp / "orthanc")
        if args.orthanc_nodelay:
            pacs.env = {"TCP_NODELAY": "1"}
        pacs.start()
        state = tmp / "state"
        config = NodeConfig(
            model=REFERENCE_MODEL,
            state=state,
            host="127.0.0.1",
            port=0,
            allowed_aes=tuple(f"MODALITY{i + 1}" for i in range(max(args.clients, 1))),
            pacs=Destination(pacs.ae_title, "127.0.0.1", pacs.dicom_port),
            explain=explain,
            retry_initial=0.5,
            retry_max=2.0,
        )
        load = [open("/proc/loadavg").read().split()[:3]]
        with node_log:
            rows, version = run_sets(args, config, pacs, small, alone, explain, state)
        load.append(open("/proc/loadavg").read().split()[:3])
        stores = node_log.stores()
    kinds = collections.Counter(name.rsplit(".", 2)[-2] for name in stores)
    twice = sum(1 for n in stores.values() if n > 1)
    print(f"machine: {machine()}; load average before {load[0]}, after {load[1]}")
    print(
        f"Orthanc {version}{' (TCP_NODELAY=1)' if args.orthanc_nodelay else ''}; "
        f"heatmaps {'on' if explain else 'off'}; stores by the node: {kinds['sr']} reports, "
        f"{kinds['sc']} heatmaps, {twice} object(s) stored twice"
    )
    for name, row in rows.items():
        print(json.dumps({"set": name, **row}))


def run_sets(args, config, pacs, small, alone, explain, state):
    """Start the node, push each set, stop; ({set: figures}, Orthanc's version)."""
    sets = (
        (
            f"{args.films} films {args.size}x{args.size} 8-bit, {args.clients} clients",
            [small[i :: args.clients] for i in range(args.clients)],
            False,
        ),
        (
            f"{args.alone} films {args.alone_size}x{args.alone_size} 12-bit, one by one",
            [alone],
            True,
        ),
    )
    running = Node(config).start()
    arrivals = Arrivals(pacs).start()
    helper = running.outbox.helper.process.pid if running.outbox.helper else None
    processes = {"orthanc": orthanc_pid(pacs), "heatmap_process": helper}
    rows = {}

    def cpu() -> dict[str, float]:
        # This process: the node, and the benchmark's own polling of Orthanc (light).
        used = {"node": time.process_time()}
        return used | {key: cpu_seconds(pid) for key, pid in processes.items() if pid}

    try:
        for name, batches, one_by_one in sets:
            if batches[0]:
                rows[name] = measure(running, arrivals, batches, state, explain, one_by_one, cpu)
    finally:
        arrivals.stop()
        running.stop()
        version = pacs.get("/system")["Version"]
        pacs.stop()
    return rows, version


if __name__ == "__main__":
    main()
