"""Where a film's time goes in the DICOM node: each step alone, and a store at Orthanc.

    python benchmarks/node_costs.py [--films 40] [--size 96]

For --films small DICOM films (real test/ films, shrunk), each step the node takes per film,
timed alone in this process (processor time of this thread, and wall time, per film):
classify (read, render, model, scope), the report (the film's header, highdicom's TID 1500,
the file's bytes), the occlusion map (26 model runs at the default grid), the heatmap
object (overlay, highdicom's Secondary Capture, the file's bytes). Then the wall time of
one C-STORE of a report at Orthanc (tests/orthanc_support.py) on one association, with
and without TCP_NODELAY on the node's socket and on Orthanc's (dcmtk's TCP_NODELAY=1).
Needs orthanc and the node extra.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import node_support  # noqa: E402
import orthanc_support  # noqa: E402

from edgexray.edge_runtime import REFERENCE_MODEL  # noqa: E402
from edgexray.edge_runtime.classifier import Classifier  # noqa: E402
from edgexray.edge_runtime.explain import occlusion_map  # noqa: E402
from edgexray.edge_runtime.node import evidence, heatmap, outbox, sr  # noqa: E402


def timed(step, items) -> tuple[float, float]:
    """(processor ms, wall ms) per item of step(item), after one untimed call."""
    step(items[0])
    cpu, wall = time.thread_time(), time.perf_counter()
    for item in items:
        step(item)
    count = len(items)
    return (time.thread_time() - cpu) * 1000 / count, (time.perf_counter() - wall) * 1000 / count


def saved(dataset) -> bytes:
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def store_ms(pacs, reports: list[bytes], node_no_delay: bool) -> float:
    """Wall ms of one C-STORE of a report at pacs, on one association."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid
    from pynetdicom import AE, evt

    ae = AE(ae_title="EDGEXRAY")
    ae.add_requested_context(sr.COMPREHENSIVE_SR, evidence.EXPLICIT_LITTLE)
    handlers = [(evt.EVT_CONN_OPEN, outbox._no_delay)] if node_no_delay else []
    assoc = ae.associate(
        "127.0.0.1", pacs.dicom_port, ae_title=pacs.ae_title, evt_handlers=handlers
    )
    datasets = [dcmread(BytesIO(report)) for report in reports]
    for dataset in datasets:  # new instances each time: never Orthanc's "already stored"
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    assoc.send_c_store(datasets[0])
    started = time.perf_counter()
    for dataset in datasets[1:]:
        assert assoc.send_c_store(dataset).Status == 0
    elapsed = (time.perf_counter() - started) * 1000 / (len(datasets) - 1)
    assoc.release()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=40)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    classifier = Classifier(REFERENCE_MODEL, threads=1)
    with tempfile.TemporaryDirectory(prefix="node costs ") as tmp:
        tmp = Path(tmp)
        paths = list(node_support.write_films(tmp / "films", args.films, args.size).values())
        films = {path: classifier.classify_film(path) for path in paths}
        maps = {path: occlusion_map(classifier, films[path].resized) for path in paths}
        sidecar = classifier.sidecar

        def report(path):
            return saved(
                sr.structured_report(evidence.read_header(path), films[path].record, sidecar)
            )

        def picture(path):
            header = evidence.read_header(path)
            capture = heatmap.heatmap_capture(header, films[path].film, maps[path], sidecar)
            return saved(capture)

        steps = {
            "classify (read, render, model, scope)": classifier.classify_film,
            "report: header, TID 1500, bytes": report,
            "occlusion map (26 model runs)": lambda p: occlusion_map(classifier, films[p].resized),
            "heatmap: overlay, Secondary Capture, bytes": picture,
        }
        print(f"{args.films} films {args.size}x{args.size}, 1 interpreter thread")
        print("| step | processor ms a film | wall ms a film |\n|---|---|---|")
        for name, step in steps.items():
            cpu, wall = timed(step, paths)
            print(f"| {name} | {cpu:.1f} | {wall:.1f} |")
        reports = [report(path) for path in paths]
        print("\n| node socket | Orthanc | wall ms a C-STORE |\n|---|---|---|")
        for orthanc_no_delay in (False, True):
            pacs = orthanc_support.Orthanc(tmp / f"orthanc {orthanc_no_delay}")
            pacs.env = {"TCP_NODELAY": "1"} if orthanc_no_delay else {}
            pacs.start()
            try:
                for node_no_delay in (False, True):
                    ms = store_ms(pacs, reports, node_no_delay)
                    sides = (
                        "TCP_NODELAY" if flag else "default"
                        for flag in (node_no_delay, orthanc_no_delay)
                    )
                    print(f"| {' | '.join(sides)} | {ms:.1f} |")
            finally:
                pacs.stop()


if __name__ == "__main__":
    main()
