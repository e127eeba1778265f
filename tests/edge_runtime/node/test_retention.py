"""What the node keeps of a patient, and for how long: kept films, pages and records are
pruned after --keep-days or beyond --keep-mb, never before their results reached the PACS;
everything it writes is its user's alone whatever the umask."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest
from node_support import MODALITY_AE, wait_for, write_films

from edgexray.edge_runtime import REFERENCE_MODEL
from edgexray.edge_runtime.node import retention, spool
from edgexray.edge_runtime.node.config import Destination, NodeConfig
from edgexray.edge_runtime.node.outbox import REPORT
from edgexray.edge_runtime.node.retention import DAY
from edgexray.edge_runtime.node.server import Node

pytest.importorskip("pynetdicom")


@pytest.fixture
def config(tmp_path) -> NodeConfig:
    return NodeConfig(
        model=REFERENCE_MODEL,
        state=tmp_path / "node state",
        allowed_aes=(MODALITY_AE,),
        host="127.0.0.1",
        port=0,
        reports=True,
    )


@pytest.fixture
def nodes():
    started = []
    yield started
    for node in started:
        node.stop()


def stored_films(config: NodeConfig, tmp_path: Path, ages_in_days: list[float]) -> list[str]:
    """Films waiting in incoming/ as if stored that many days ago; their UIDs, in order."""
    films = write_films(tmp_path / "films", len(ages_in_days))
    incoming = config.state / spool.INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for (uid, path), age in zip(films.items(), ages_in_days, strict=True):
        shutil.copyfile(path, incoming / f"{uid}.dcm")
        os.utime(incoming / f"{uid}.dcm", (now - age * DAY, now - age * DAY))
    return list(films)


def classified(config: NodeConfig, nodes: list) -> Node:
    node = Node(config).start()
    nodes.append(node)
    assert node.wait_idle(60)
    return node


def records(config: NodeConfig) -> list[dict]:
    lines = (config.state / spool.RESULTS).read_text().splitlines()
    return [json.loads(line) for line in lines]


def kept(config: NodeConfig) -> set[str]:
    return {p.stem for p in (config.state / spool.CLASSIFIED).iterdir()}


def pages(config: NodeConfig) -> set[str]:
    return {p.stem for p in (config.state / spool.REPORTS).iterdir()}


def test_films_pages_and_records_older_than_keep_days_are_deleted(config, tmp_path, nodes):
    uids = stored_films(config, tmp_path, [10, 9, 8, 1, 0])
    node = classified(replace(config, keep_days=7), nodes)
    assert kept(config) == set(uids) and pages(config) == set(uids)
    pruned = node.prune()
    assert pruned["films"] == 3 and pruned["records"] == 3
    assert kept(config) == pages(config) == set(uids[3:])
    assert [r["sop_instance_uid"] for r in records(config)] == uids[3:]


def test_the_oldest_films_go_first_beyond_keep_mb(config, tmp_path, nodes):
    uids = stored_films(config, tmp_path, [5, 4, 3, 2, 1])
    node = classified(replace(config, keep_mb=1000), nodes)
    assert node.prune() == {"films": 0, "bytes": 0, "records": 0}
    sizes = {k.uid: k.size for k in retention.kept_films(node.state)}
    room = sizes[uids[3]] + sizes[uids[4]] + sizes[uids[2]] // 2  # two films and a half
    pruned = retention.prune(node.state, retention.Retention(megabytes=room / 2**20), set())
    assert pruned["films"] == 3 and pruned["bytes"] == sum(sizes[uid] for uid in uids[:3])
    assert kept(config) == set(uids[3:]) and pages(config) == set(uids[3:])
    assert [r["sop_instance_uid"] for r in records(config)] == uids[3:]


def test_a_film_whose_results_wait_for_the_pacs_is_kept(config, tmp_path, nodes):
    uids = stored_films(config, tmp_path, [30, 30])
    down = Destination("PACS", "127.0.0.1", 9)  # nothing listens there: reports wait
    node = classified(replace(config, keep_days=1, pacs=down, retry_initial=60), nodes)
    outbox = config.state / spool.OUTBOX
    assert node.outbox.films_waiting() == set(uids)
    node.prune()
    assert kept(config) == set(uids) and len(records(config)) == 2
    # Both reports built, so no lane is still writing one when the first is "delivered".
    assert wait_for(lambda: all((outbox / f"{uid}{REPORT.ready}").exists() for uid in uids), 60)
    for path in list(outbox.glob(f"{uids[0]}.*")):
        path.unlink()  # its report was delivered
    node.prune()
    assert kept(config) == {uids[1]}
    assert [r["sop_instance_uid"] for r in records(config)] == [uids[1]]


def test_records_are_appended_after_a_prune_and_the_state_recovers(config, tmp_path, nodes):
    uids = stored_films(config, tmp_path, [10, 0])
    node = classified(replace(config, keep_days=7), nodes)
    node.prune()
    more = write_films(tmp_path / "more", 1)
    ((uid, path),) = more.items()
    shutil.copyfile(path, config.state / spool.INCOMING / f"{uid}.dcm")
    node.worker.put(f"{uid}.dcm")
    assert node.wait_idle(60)
    assert [r["sop_instance_uid"] for r in records(config)] == [uids[1], uid]
    node.stop()
    nodes.remove(node)
    again = classified(config, nodes)
    assert again.state.recover() == [] and len(records(config)) == 2


def test_every_file_the_node_writes_is_its_users_alone_whatever_the_umask(config, tmp_path, nodes):
    stored_films(config, tmp_path, [0, 0])  # as a C-STORE leaves them: the node's own
    for film in (config.state / spool.INCOMING).iterdir():
        film.chmod(0o644)  # as an older node, or a person, left them
    previous = os.umask(0)
    try:
        fresh = spool.NodeState(tmp_path / "a new state")
        down = Destination("PACS", "127.0.0.1", 9)
        node = classified(replace(config, pacs=down, explain=True, retry_initial=60), nodes)
        outbox = config.state / spool.OUTBOX
        assert node.outbox.films_waiting()
        deadline = time.monotonic() + 60
        while len(list(outbox.glob("*.dcm"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.umask(previous)
    found = {}
    for path in config.state.rglob("*"):
        if path.parent.name == spool.ATTEMPTS:
            continue  # attempt counters: a number, no patient
        found[path.relative_to(config.state)] = stat.S_IMODE(path.stat().st_mode)
    assert len(list(outbox.glob("*.dcm"))) == 4  # two reports and two heatmaps waiting
    for path, mode in found.items():
        folder = (config.state / path).is_dir()
        assert mode == (0o700 if folder else 0o600), (path, oct(mode))
    assert stat.S_IMODE(fresh.folder.stat().st_mode) == 0o700
    fresh.results.close()


@pytest.mark.parametrize("flag", ["keep_days", "keep_mb"])
@pytest.mark.parametrize("value", [0, -1, float("inf")])
def test_a_retention_limit_must_be_a_positive_finite_number(config, flag, value):
    from edgexray.edge_runtime.errors import InferenceError

    with pytest.raises(InferenceError, match=flag.replace("_", "-")):
        replace(config, **{flag: value})
