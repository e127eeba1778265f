"""The node against a real PACS: Orthanc, started here on 127.0.0.1 (orthanc_support).

Films are pushed with dcmtk's storescu to Orthanc (as a modality sends them to its PACS)
and to `edgexray serve --pacs ORTHANC@127.0.0.1:PORT --explain`; Orthanc's REST API must
then hold, in each film's study, exactly one result report and one heatmap, filed under
the film's patient: after a plain push, after the node is SIGKILLed with results queued
and started again, and after Orthanc was stopped for a while and started again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import orthanc_support
import pytest
from node_support import (
    DCMTK_MISSING,
    MODALITY_AE,
    SHARED_TEST,
    SOURCES,
    dcmtk,
    free_port,
    have_dcmtk,
    report_values,
    source_of,
    storescu,
    wait_for,
    write_films,
)

from edgexray.edge_runtime.node import heatmap, spool, sr
from edgexray.edge_runtime.node.films import SyntheticFilm, write_test_film

pytest.importorskip("pynetdicom")
pytestmark = [
    pytest.mark.skipif(not have_dcmtk(), reason=DCMTK_MISSING),
    orthanc_support.skip_unless_available(orthanc_support.available(), orthanc_support.MISSING),
]
EDGEXRAY = str(Path(sys.executable).with_name("edgexray"))
PATIENT_TAGS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")


@pytest.fixture
def orthanc(tmp_path):
    pacs = orthanc_support.Orthanc(tmp_path / "orthanc").start()
    yield pacs
    pacs.stop()


@pytest.fixture
def films(tmp_path) -> dict[str, Path]:
    """Six films of two patients with every patient attribute filled, and one made from a
    JPEG by `edgexray to-dicom`: {SOP Instance UID: path}."""
    found = write_films(tmp_path / "films", 6)
    from pydicom import dcmread

    for number, path in enumerate(found.values()):
        film = dcmread(path)
        film.PatientID, film.PatientName = f"P-{number % 2}", f"Doe^Child{number % 2}"
        film.PatientBirthDate, film.PatientSex = "20220301", "MF"[number % 2]
        film.AccessionNumber = f"ACC-{number}"
        film.save_as(path)
    converted = tmp_path / "films" / "from jpeg.dcm"
    written = write_test_film(SHARED_TEST / SOURCES[3], converted, SyntheticFilm(view="AP"))
    found[written["sop_instance_uid"]] = converted
    return found


def serve(state: Path, port: int, pacs: orthanc_support.Orthanc, log: Path) -> subprocess.Popen:
    args = [EDGEXRAY, "serve", "--state", str(state), "--allow-ae", MODALITY_AE]
    args += ["--host", "127.0.0.1", "--port", str(port), "--pacs", pacs.destination, "--explain"]
    args += ["--retry-initial", "0.5", "--retry-max", "2"]
    with open(log, "a") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)


def listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def stop(process: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
    process.wait(60)


def push_to_pacs(pacs: orthanc_support.Orthanc, films: dict[str, Path]) -> None:
    """The modality's own copy of each film, sent to the PACS."""
    args = [dcmtk("storescu"), "-aet", MODALITY_AE, "-aec", pacs.ae_title, "127.0.0.1"]
    subprocess.run([*args, str(pacs.dicom_port), *map(str, films.values())], check=True)


def complete(pacs: orthanc_support.Orthanc, films: dict[str, Path], state: Path) -> bool:
    """True when every film has its record and each film's study at Orthanc holds (at
    least) a report per film and a heatmap per answered film."""
    results = {r["sop_instance_uid"]: r for r in _records(state)}
    if set(results) != set(films):
        return False
    wanted: dict[str, list[int]] = {}
    for uid, study in _studies_of(films).items():
        counts = wanted.setdefault(study, [0, 0])
        counts[0] += 1
        counts[1] += results[uid].get("in_scope") is not False
    contents = pacs.contents()
    for study, (reports, heatmaps) in wanted.items():
        series = [s["description"] for s in contents.get(study, {}).get("series", [])]
        if series.count(sr.SERIES_DESCRIPTION) < reports:
            return False
        if series.count(heatmap.SERIES_DESCRIPTION) < heatmaps:
            return False
    return True


def _studies_of(films: dict[str, Path]) -> dict[str, str]:
    from pydicom import dcmread

    return {
        uid: str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
        for uid, path in films.items()
    }


def assert_one_report_and_one_heatmap_per_film(pacs, films: dict[str, Path], state: Path):
    """Each film's study at Orthanc: the film, exactly one report and one heatmap that
    reference it, all under the film's patient; the report says what the record says."""
    from pydicom import dcmread

    contents = pacs.contents()
    results = {r["sop_instance_uid"]: r for r in _records(state)}
    assert set(results) == set(films)
    seen = {"report": [], "heatmap": []}
    for uid, path in films.items():
        film = dcmread(path, stop_before_pixels=True)
        study = contents[str(film.StudyInstanceUID)]
        for tag in PATIENT_TAGS:
            assert study["patient"].get(tag, "") == str(film.get(tag, "")), (tag, study)
        for series in study["series"]:
            for instance in series["instances"]:
                dataset = pacs.dataset(instance)
                if dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33":
                    seen["report"].append(source_of(dataset))
                    if source_of(dataset) == uid:
                        values = report_values(dataset)
                        label = results[uid]["label"]
                        assert (
                            values["Pneumonia"]
                            == {
                                "PNEUMONIA": "Present",
                                "NORMAL": "Absent",
                                "OUT_OF_SCOPE": "Indeterminate",
                            }[label]
                        )
                elif "SourceImageSequence" in dataset and dataset.BurnedInAnnotation == "YES":
                    seen["heatmap"].append(source_of(dataset))
    for kind, sources in seen.items():
        assert sorted(sources) == sorted(set(sources)), f"a {kind} twice"
        answered = {uid for uid, r in results.items() if r.get("in_scope") is not False}
        expected = set(films) if kind == "report" else answered
        assert set(sources) == expected, kind


def _records(state: Path) -> list[dict]:
    path = state / spool.RESULTS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_film_gets_one_report_and_one_heatmap_in_its_study(tmp_path, orthanc, films):
    push_to_pacs(orthanc, films)
    state, port = tmp_path / "node state", free_port()
    node = serve(state, port, orthanc, tmp_path / "node.log")
    try:
        assert wait_for(lambda: listening(port), 90, 0.2), (tmp_path / "node.log").read_text()
        assert storescu(port, films.values()).returncode == 0
        assert wait_for(lambda: complete(orthanc, films, state), 180, 0.5)
        assert wait_for(lambda: not list((state / spool.OUTBOX).glob("*.dcm")), 60)
    finally:
        stop(node)
    assert node.returncode == 0
    assert_one_report_and_one_heatmap_per_film(orthanc, films, state)


def test_results_arrive_once_after_the_node_is_killed_with_results_queued(tmp_path, orthanc, films):
    push_to_pacs(orthanc, films)
    state, port = tmp_path / "node state", free_port()
    log = tmp_path / "node.log"
    node = serve(state, port, orthanc, log)
    try:
        assert wait_for(lambda: listening(port), 90, 0.2), log.read_text()
        assert storescu(port, films.values()).returncode == 0
        outbox = state / spool.OUTBOX
        # Killed while results wait: queued or built, not all delivered.
        assert wait_for(lambda: any(outbox.glob("*.json")) or any(outbox.glob("*.dcm")), 60)
        node.kill()
        node.wait(60)
    finally:
        stop(node, signal.SIGKILL)
    left = [p.name for p in (state / spool.OUTBOX).iterdir() if p.is_file()]
    left += [p.name for p in (state / spool.INCOMING).iterdir()]
    assert left, "the kill came after everything was delivered"
    again = serve(state, port, orthanc, log)
    try:
        assert wait_for(lambda: complete(orthanc, films, state), 180, 0.5), log.read_text()[-3000:]
        assert wait_for(lambda: not list((state / spool.OUTBOX).glob("*.dcm")), 60)
    finally:
        stop(again)
    assert_one_report_and_one_heatmap_per_film(orthanc, films, state)


def test_results_wait_while_orthanc_is_stopped_and_arrive_when_it_is_back(tmp_path, orthanc, films):
    push_to_pacs(orthanc, films)
    orthanc.stop()
    state, port = tmp_path / "node state", free_port()
    log = tmp_path / "node.log"
    node = serve(state, port, orthanc, log)
    try:
        assert wait_for(lambda: listening(port), 90, 0.2), log.read_text()
        assert storescu(port, films.values()).returncode == 0
        outbox = state / spool.OUTBOX
        ready = lambda: len(list(outbox.glob("*.sr.dcm"))) == len(films)  # noqa: E731
        assert wait_for(ready, 120), log.read_text()[-3000:]
        time.sleep(3)  # a few retries fail while the PACS is away
        assert "wait for ORTHANC@" in log.read_text()
        orthanc.start()
        assert wait_for(lambda: complete(orthanc, films, state), 180, 0.5), log.read_text()[-3000:]
        assert wait_for(lambda: not list(outbox.glob("*.dcm")), 60)
    finally:
        stop(node)
    assert_one_report_and_one_heatmap_per_film(orthanc, films, state)


@pytest.mark.skipif(shutil.which("ss") is None, reason="no ss (iproute2) to list sockets")
def test_orthanc_listens_on_the_loopback_only(orthanc):
    """The harness's promise: nothing it starts listens beyond 127.0.0.1."""
    listening_on = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True).stdout
    ours = [line for line in listening_on.splitlines() if f":{orthanc.dicom_port} " in line]
    ours += [line for line in listening_on.splitlines() if f":{orthanc.http_port} " in line]
    assert ours and all("127.0.0.1:" in line for line in ours), ours
    assert not [line for line in listening_on.splitlines() if "Orthanc" in line]
    assert os.path.exists(orthanc.folder / "storage")
