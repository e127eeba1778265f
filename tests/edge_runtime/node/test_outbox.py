"""The outbox's heatmap process: it starts with the node, builds heatmaps from outbox/, is
started again when it dies, and dies with the node."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import pytest
from node_support import MODALITY_AE, wait_for, write_films

from edgexray.edge_runtime import REFERENCE_MODEL
from edgexray.edge_runtime.node import outbox, spool
from edgexray.edge_runtime.node.config import Destination, NodeConfig
from edgexray.edge_runtime.node.server import Node

pytest.importorskip("highdicom")
NOBODY = Destination("PACS", "127.0.0.1", 9)  # nothing listens there: results wait


@pytest.fixture
def node(tmp_path):
    config = NodeConfig(
        model=REFERENCE_MODEL,
        state=tmp_path / "node state",
        allowed_aes=(MODALITY_AE,),
        host="127.0.0.1",
        port=0,
        pacs=NOBODY,
        explain=True,
        retry_initial=60,
    )
    running = Node(config).start()
    yield running
    running.stop()


def stored(node: Node, films) -> None:
    for uid, path in films.items():
        shutil.copyfile(path, node.state.incoming / f"{uid}.dcm")
        node.worker.put(f"{uid}.dcm")


def heatmaps(node: Node) -> set[str]:
    folder = node.state.folder / spool.OUTBOX
    return {p.name.removesuffix(outbox.HEATMAP.ready) for p in folder.glob("*.sc.dcm")}


def test_a_heatmap_process_that_died_is_started_again_and_catches_up(node, tmp_path, monkeypatch):
    monkeypatch.setattr(outbox, "RESTART_EVERY", 0.0)
    films = write_films(tmp_path / "films", 3)
    first = dict(list(films.items())[:1])
    stored(node, first)
    assert wait_for(lambda: heatmaps(node) == set(first), 90)
    helper = node.outbox.helper.process
    os.kill(helper.pid, signal.SIGKILL)  # as the OOM killer would
    helper.join(30)
    stored(node, dict(list(films.items())[1:]))
    assert wait_for(lambda: heatmaps(node) == set(films), 90)
    assert node.outbox.helper.process.pid != helper.pid


def test_the_heatmap_process_stops_with_the_node(node):
    helper = node.outbox.helper.process
    assert helper.is_alive()
    node.stop()
    assert not helper.is_alive()


def _gone(pid: int) -> bool:
    """True when pid no longer runs (gone, or a zombie nobody reaped yet)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux's /proc")
def test_the_heatmap_process_dies_when_the_node_is_killed(tmp_path):
    script = f"""
import time
from edgexray.edge_runtime.node.config import Destination, NodeConfig
from edgexray.edge_runtime.node.server import Node
config = NodeConfig(model={str(REFERENCE_MODEL)!r}, state={str(tmp_path / "state")!r},
    allowed_aes=("X",), host="127.0.0.1", port=0, pacs=Destination("PACS", "127.0.0.1", 9),
    explain=True)
node = Node(config).start()
print(node.outbox.helper.process.pid, flush=True)
time.sleep(600)
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        helper = int(parent.stdout.readline())
        assert not _gone(helper)
        parent.kill()  # SIGKILL: no stop() runs
        parent.wait(30)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert wait_for(lambda: _gone(helper), 30)
