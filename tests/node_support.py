"""Helpers for the DICOM node tests: films as DICOM files, free ports, a PACS, dcmtk.

The films are a few real test/ films of the shared data, shrunk (so 300 of them transfer
in seconds) and written as CR/DX DICOM files under tmp_path with their own UIDs.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

SHARED_TEST = Path(__file__).resolve().parents[1].parent / "shared/data/chest_xray/test"
SOURCES = (
    "NORMAL/IM-0005-0001.jpeg",
    "NORMAL/IM-0011-0001-0001.jpeg",
    "PNEUMONIA/person101_bacteria_483.jpeg",
    "PNEUMONIA/person101_bacteria_484.jpeg",
)
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
MODALITY_AE = "MODALITY1"
NODE_AE = "EDGEXRAY"


@functools.cache
def dcmtk(tool: str) -> str | None:
    """The path of dcmtk's tool, or None. pynetdicom installs Python tools of the same
    names (echoscu, storescu) into the venv, which comes first on PATH: ask each."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = shutil.which(tool, path=folder)
        if path:
            try:
                version = subprocess.run(
                    [path, "--version"], capture_output=True, text=True, timeout=10
                ).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            if "dcmtk" in version.lower():
                return path
    return None


def have_dcmtk() -> bool:
    return all(dcmtk(tool) for tool in ("storescu", "echoscu"))


DCMTK_MISSING = (
    "dcmtk (storescu, echoscu) is not installed: apt-get install -y dcmtk (.ci/run must install it)"
)


def small_films(size: int = 96) -> list[np.ndarray]:
    """The SOURCES films as size x size 8-bit arrays."""
    films = []
    for name in SOURCES:
        with Image.open(SHARED_TEST / name) as image:
            films.append(np.asarray(image.convert("L").resize((size, size)), dtype=np.uint8))
    return films


def write_film(path: Path, pixels: np.ndarray, sop_class: str = CR_IMAGE, **tags) -> str:
    """Write pixels as a DICOM file (MONOCHROME2, 8 bits); return its SOP Instance UID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.StudyID = "TEST0001", "Test^Film", "1"
    ds.Modality = {CR_IMAGE: "CR", DX_IMAGE: "DX"}.get(sop_class, "OT")
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.StudyDate, ds.StudyTime = "20260101", "120000"
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.PatientBirthDate, ds.PatientSex = "", ""
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return uid


def write_films(folder: Path, count: int, size: int = 96) -> dict[str, Path]:
    """count DICOM films (cycling through SOURCES) in folder; {SOP Instance UID: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    films = small_films(size)
    written = {}
    for i in range(count):
        sop_class = CR_IMAGE if i % 2 == 0 else DX_IMAGE
        path = folder / f"film {i:04d}.dcm"
        written[write_film(path, films[i % len(films)], sop_class)] = path
    return written


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float, interval: float = 0.05) -> bool:
    """Poll condition() until it is true or timeout seconds pass (a bounded loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def echoscu(port: int, calling: str = MODALITY_AE, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            dcmtk("echoscu"),
            "-to",
            "10",
            "-aet",
            calling,
            "-aec",
            NODE_AE,
            *extra,
            "127.0.0.1",
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def storescu_args(port: int, files, calling: str = MODALITY_AE, *extra: str) -> list[str]:
    return [
        dcmtk("storescu"),
        "-v",
        "-to",
        "20",
        "-aet",
        calling,
        "-aec",
        NODE_AE,
        *extra,
        "127.0.0.1",
        str(port),
        *map(str, files),
    ]


def storescu(port: int, files, calling: str = MODALITY_AE, *extra: str):
    return subprocess.run(
        storescu_args(port, files, calling, *extra), capture_output=True, text=True, timeout=120
    )


class Pacs:
    """A local Storage SCP (pynetdicom) standing in for the PACS: keeps what it receives."""

    AE_TITLE = "PACS"

    def __init__(self, port: int):
        self.port = port
        self.received: list = []
        self._lock = threading.Lock()
        self._server = None

    def start(self) -> Pacs:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage

        ae = AE(ae_title=self.AE_TITLE)
        ae.add_supported_context(ComprehensiveSRStorage)
        ae.add_supported_context(SecondaryCaptureImageStorage)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        return self

    def _store(self, event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        with self._lock:
            self.received.append(dataset)
        return 0x0000

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def by_source(self, sop_class: str = "1.2.840.10008.5.1.4.1.1.88.33") -> dict[str, list]:
        """Received objects of sop_class (reports by default) by the SOP Instance UID of
        the film each references."""
        found: dict[str, list] = {}
        with self._lock:
            for received in self.received:
                if received.SOPClassUID == sop_class:
                    found.setdefault(source_of(received), []).append(received)
        return found


def source_of(result) -> str:
    """The SOP Instance UID of the film a report or a heatmap refers to."""
    if "CurrentRequestedProcedureEvidenceSequence" in result:
        evidence = result.CurrentRequestedProcedureEvidenceSequence[0]
        uid = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        return str(uid.ReferencedSOPInstanceUID)
    return str(result.SourceImageSequence[0].ReferencedSOPInstanceUID)


def report_values(report) -> dict:
    """The content of a TID 1500 report by concept meaning: a code's meaning, a number, or
    for repeated text items (comments, algorithm parameters) the list of texts."""
    values: dict = {}

    def walk(items):
        for item in items:
            name = str(item.ConceptNameCodeSequence[0].CodeMeaning)
            if item.ValueType == "CODE":
                values[name] = str(item.ConceptCodeSequence[0].CodeMeaning)
            elif item.ValueType == "NUM":
                values[name] = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "TEXT":
                values.setdefault(name, []).append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(report.ContentSequence)
    return values
