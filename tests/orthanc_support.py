"""Orthanc as the PACS of the node tests and benchmarks, reachable on 127.0.0.1 only.

Orthanc (Debian package `orthanc`) runs from its own configuration, storage and index in a
folder of the caller's, never /var/lib/orthanc. Orthanc 1.10 has no option for the address
it listens on: it binds its DICOM and HTTP ports on every interface. So it runs in a network
namespace of its own (`unshare --net`, which holds nothing but a loopback interface), and a
small relay, started in that namespace with two listening sockets made beforehand on the
host's 127.0.0.1, passes each connection through to it. Nothing listens beyond 127.0.0.1,
and stopping the relay stops Orthanc (it dies with its parent).

    python tests/orthanc_support.py relay CONFIG DICOM_FD HTTP_FD DICOM_PORT HTTP_PORT

is the relay (run by `Orthanc.start`, inside the namespace).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ORTHANC = "/usr/sbin/Orthanc"
AE_TITLE = "ORTHANC"
MISSING = (
    "Orthanc is not installed (apt-get install -y orthanc; .ci/run installs it) or network "
    "namespaces are not allowed here (unshare --net)"
)
# CI sets this: there the PACS tests must run, and fail rather than skip without their tools.
REQUIRED = os.environ.get("EDGEXRAY_REQUIRE_PACS_TOOLS") == "1"


def skip_unless_available(tool_found: bool, reason: str):
    """pytest's skip mark for a missing tool, unless CI requires the tool (then the test
    runs, and fails on what is missing)."""
    import pytest

    return pytest.mark.skipif(not tool_found and not REQUIRED, reason=reason)


def available() -> bool:
    """True when Orthanc can be run here in a network namespace of its own."""
    if not (Path(ORTHANC).exists() and shutil.which("unshare")):
        return False
    probe = subprocess.run([*_unshare(), "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def _unshare() -> list[str]:
    # Root makes the namespace itself; anyone else through a user namespace of their own.
    return ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])


def _listening_socket(port: int) -> socket.socket:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
    return listener


class Orthanc:
    """One Orthanc in folder (configuration, storage, index, log), started and stopped by
    its caller; its ports stay the same across restarts."""

    def __init__(self, folder: Path, ae_title: str = AE_TITLE):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.dicom_port = self.http_port = 0
        self.process: subprocess.Popen | None = None
        self.config = self.folder / "orthanc.json"
        self.env: dict = {}

    @property
    def destination(self) -> str:
        """The node's --pacs value."""
        return f"{self.ae_title}@127.0.0.1:{self.dicom_port}"

    def start(self, timeout: float = 60.0) -> Orthanc:
        dicom = _listening_socket(self.dicom_port)
        http = _listening_socket(self.http_port)
        self.dicom_port, self.http_port = dicom.getsockname()[1], http.getsockname()[1]
        self._write_config()
        log = open(self.folder / "orthanc.log", "a")
        arguments = [str(self.config), str(dicom.fileno()), str(http.fileno())]
        arguments += [str(self.dicom_port), str(self.http_port)]
        self.process = subprocess.Popen(
            [*_unshare(), sys.executable, __file__, "relay", *arguments],
            env=dict(os.environ, **self.env),
            pass_fds=(dicom.fileno(), http.fileno()),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        dicom.close(), http.close(), log.close()  # the relay holds them now
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc stopped at once: see {self.folder / 'orthanc.log'}")
            try:
                self.get("/system")
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer in {timeout:g} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        self.process = None

    def _write_config(self) -> None:
        config = {
            "Name": "edgexray-tests",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"),
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True,
            "DicomCheckCalledAet": True,
            "Plugins": [],
            "SaveJobs": False,
            "StorageCompression": False,
        }
        self.config.write_text(json.dumps(config, indent=1))

    # --- the REST API -----------------------------------------------------------------

    def get(self, path: str):
        """GET path of the REST API: parsed JSON, or bytes when it is not JSON."""
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = response.read()
            kind = response.headers.get("Content-Type", "")
        return json.loads(body) if kind.startswith("application/json") else body

    def studies(self) -> list[dict]:
        """Every study, expanded (its tags and its series' Orthanc ids)."""
        return self.get("/studies?expand")

    def instances(self, study_id: str) -> list[dict]:
        """Every instance of a study (Orthanc id), expanded."""
        return self.get(f"/studies/{study_id}/instances?expand")

    def dataset(self, instance_id: str):
        """One instance as a pydicom Dataset."""
        from io import BytesIO

        from pydicom import dcmread

        return dcmread(BytesIO(self.get(f"/instances/{instance_id}/file")))

    def contents(self) -> dict[str, dict]:
        """{StudyInstanceUID: {"patient": the study's patient tags, "series": [{"modality",
        "description", "instances": Orthanc ids}, ...]}}; a StudyInstanceUID filed under
        two patients (a result whose patient differs from its film's) is a list of both."""
        found: dict[str, dict] = {}
        for study in self.studies():
            uid = study["MainDicomTags"]["StudyInstanceUID"]
            series = [
                {
                    "modality": item["MainDicomTags"].get("Modality"),
                    "description": item["MainDicomTags"].get("SeriesDescription", ""),
                    "instances": item["Instances"],
                }
                for item in self.get(f"/studies/{study['ID']}/series?expand")
            ]
            entry = {"patient": study["PatientMainDicomTags"], "series": series}
            if uid in found:
                raise AssertionError(f"study {uid} is filed under two patients")
            found[uid] = entry
        return found


# --- the relay, run inside the namespace ---------------------------------------------------

SIOCSIFFLAGS, IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x8914, 0x1, 0x8, 0x40
PR_SET_PDEATHSIG = 1


def _loopback_up() -> None:
    """`ip link set lo up`, without needing iproute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14x", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING)
        fcntl.ioctl(probe.fileno(), SIOCSIFFLAGS, request)


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(1 << 18):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for side in (source, target):
            try:
                side.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _serve(listener: socket.socket, port: int) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=30)
            upstream.settimeout(None)
            # DICOM sends a small command, then the data set, then waits for a small
            # answer: Nagle's algorithm would hold each small write for a delayed ACK.
            for side in (client, upstream):
                side.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            client.close()
            continue
        for pair in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=pair, daemon=True).start()


def relay(config: str, dicom_fd: str, http_fd: str, dicom_port: str, http_port: str) -> None:
    _loopback_up()
    orthanc = subprocess.Popen([ORTHANC, config], preexec_fn=_die_with_parent)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    for fd, port in ((dicom_fd, dicom_port), (http_fd, http_port)):
        listener = socket.socket(fileno=int(fd))
        threading.Thread(target=_serve, args=(listener, int(port)), daemon=True).start()
    while not stopping.wait(0.2) and orthanc.poll() is None:
        pass
    if orthanc.poll() is None:
        orthanc.send_signal(signal.SIGTERM)
        orthanc.wait(30)


if __name__ == "__main__" and sys.argv[1:2] == ["relay"]:
    relay(*sys.argv[2:7])
