"""The rpi bundle's watch folder: a film leaves the inbox only once its record is written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_xray
from edge_support import make_venv, run, run_blocked
from sidecar_support import with_graph_changed

from edgexray.export.bundle import BundleConfig, make_bundle


@pytest.fixture
def pi(tiny_tflite, tmp_path) -> Path:
    """A Pi home with the rpi bundle at edgexray/ and its venv, as the README sets it up."""
    home = tmp_path / "pi home"
    make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(home / "edgexray")))
    make_venv(home / "edgexray")
    return home


def drop_films(inbox: Path, count: int) -> list[str]:
    inbox.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    for i in range(count):
        path = inbox / f"film {i}.png"
        synthetic_xray(rng, pneumonia=bool(i % 2)).save(path)
        os.utime(path, (time.time() - 60, time.time() - 60))  # copied a minute ago
    return [f"film {i}.png" for i in range(count)]


def watch_once(home: Path, results, tmp_path: Path) -> subprocess.CompletedProcess:
    folders = [str(home / "inbox"), str(home / "done"), str(results)]
    return run_blocked(
        ["sh", str(home / "edgexray" / "watch-folder.sh"), *folders], tmp_path, env={"ONCE": "1"}
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_watch_folder_never_moves_a_film_whose_record_was_not_written(pi, tmp_path):
    names = drop_films(pi / "inbox", 3)
    os.mkfifo(pi / "inbox" / "pipe.jpeg")  # not a film: neither hangs nor moves
    full = watch_once(pi, "/dev/full", tmp_path)
    assert full.returncode != 0 and "cannot append the records" in full.stderr
    assert list((pi / "done").iterdir()) == []
    waiting = (pi / "inbox" / ".processing").rglob("*")
    assert sorted(p.name for p in waiting if p.is_file()) == names

    results = pi / "results.jsonl"
    again = watch_once(pi, results, tmp_path)  # the next start classifies what waited
    assert again.returncode == 0, again.stderr
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == names
    assert all((pi / "done" / r["path"]).is_file() for r in records)  # relative to done/
    assert sorted(p.name for p in (pi / "inbox").iterdir()) == [".processing", "pipe.jpeg"]


def test_watch_folder_stops_and_keeps_the_films_when_the_runtime_fails(pi, tmp_path):
    names = drop_films(pi / "inbox", 2)
    model = pi / "edgexray" / "int8.tflite"
    model.write_bytes(with_graph_changed(model.read_bytes()))  # no longer matches its sidecar
    result = watch_once(pi, pi / "results.jsonl", tmp_path)
    assert result.returncode == 2 and "sha256 differs" in result.stderr
    assert list((pi / "done").iterdir()) == [] and not (pi / "results.jsonl").exists()
    waiting = (pi / "inbox" / ".processing").rglob("*")
    assert sorted(p.name for p in waiting if p.is_file()) == names


def python_wrapper(home: Path, script: str) -> dict[str, str]:
    """PYTHON for the watcher: the bundle's venv python, with `script` (sh, where $batch is
    the batch being classified, "" otherwise) run before or around classifying."""
    wrapper = home / "python wrapper.sh"
    real = home / "edgexray" / ".venv" / "bin" / "python"
    wrapper.write_text(
        "#!/bin/sh\nbatch=''\nfor arg; do [ \"$arg\" = --model ] && model=1; last=$arg; done\n"
        '[ -n "${model:-}" ] && batch=$last\n' + script.replace("REAL", f"'{real}'")
    )
    wrapper.chmod(0o755)
    return {"ONCE": "1", "PYTHON": str(wrapper)}


def watch(home: Path, tmp_path: Path, env: dict) -> subprocess.CompletedProcess:
    folders = [str(home / "inbox"), str(home / "done"), str(home / "results.jsonl")]
    return run_blocked(
        ["sh", str(home / "edgexray" / "watch-folder.sh"), *folders], tmp_path, env=env
    )


def test_watch_folder_quarantines_a_film_that_kills_the_runtime(pi, tmp_path):
    names = drop_films(pi / "inbox", 2)
    poison = pi / "inbox" / "poison film.png"
    shutil.copyfile(pi / "inbox" / names[0], poison)
    os.utime(poison, (time.time() - 60, time.time() - 60))
    # Killed as the kernel's out-of-memory killer would, whenever the batch holds the poison.
    env = python_wrapper(
        pi,
        'if [ -n "$batch" ] && ls "$batch" | grep -q poison; then kill -9 $$; fi\nexec REAL "$@"\n',
    )
    codes = [watch(pi, tmp_path, env).returncode for _ in range(3)]
    assert codes == [137, 137, 0]
    records = [json.loads(line) for line in (pi / "results.jsonl").read_text().splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert sorted(by_name) == sorted([*names, "poison film.png"])
    assert "quarantined" in by_name["poison film.png"]["error"]
    assert (pi / "done" / by_name["poison film.png"]["path"]).is_file()
    assert all("probability" in by_name[name] for name in names)
    assert list((pi / "inbox" / ".processing").iterdir()) == []
    assert watch(pi, tmp_path, env).returncode == 0  # and the service goes on


def test_watch_folder_classifies_again_a_film_written_to_after_it_was_taken(pi, tmp_path):
    (name,) = drop_films(pi / "inbox", 1)
    film = pi / "inbox" / name
    whole = film.read_bytes()
    film.write_bytes(whole[: len(whole) // 2])  # the copy paused half-way...
    os.utime(film, (time.time() - 60, time.time() - 60))
    rest = pi / "rest of the film"
    rest.write_bytes(whole[len(whole) // 2 :])
    # ...and finishes while the watcher classifies the half it took.
    env = python_wrapper(
        pi,
        f'REAL "$@"; status=$?\nif [ -n "$batch" ] && [ -e \'{rest}\' ]; then'
        f" cat '{rest}' >> \"$batch/{name}\"; rm '{rest}'; fi\n"
        "exit $status\n",
    )
    assert watch(pi, tmp_path, env).returncode == 0
    assert film.read_bytes() == whole  # back in the inbox, whole
    os.utime(film, (time.time() - 60, time.time() - 60))
    assert watch(pi, tmp_path, env).returncode == 0
    records = [json.loads(line) for line in (pi / "results.jsonl").read_text().splitlines()]
    assert [("error" in r, "probability" in r) for r in records] == [(True, False), (False, True)]
    assert (pi / "done" / records[1]["path"]).read_bytes() == whole


def test_a_record_cut_short_by_a_full_disk_does_not_swallow_the_next(pi, tmp_path):
    drop_films(pi / "inbox", 1)
    results = pi / "results.jsonl"
    results.write_text('{"path": "earlier.png", "probability": 0.5}\n{"path": "cut.png", "pro')
    assert watch_once(pi, results, tmp_path).returncode == 0
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["path"] for r in records][0] == "earlier.png" and len(records) == 2


def test_watch_unit_is_sandboxed(tiny_tflite, tmp_path):
    bundle = Path(
        make_bundle(BundleConfig(str(tiny_tflite["int8"]), "rpi", str(tmp_path / "b")))["path"]
    )
    unit = (bundle / "edgexray-watch@.service").read_text()
    for directive in (
        "UMask=0077",
        "MemoryMax=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "PrivateNetwork=yes",
        "ReadWritePaths=",
    ):
        assert directive in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the score is not checked")
    instance = tmp_path / "edgexray-watch@pi.service"
    instance.write_text(unit.replace("%i", "pi"))
    result = run([analyze, "security", "--offline=yes", str(instance)])
    score = float(result.stdout.rsplit("exposure level for", 1)[1].split(":")[1].split()[0])
    assert score <= 1.0, result.stdout[-500:]  # the unit without sandboxing scored 9.2


def test_watch_folder_results_are_the_users_alone_whatever_the_umask(pi, tmp_path):
    import stat

    drop_films(pi / "inbox", 1)
    results = pi / "results.jsonl"
    previous = os.umask(0)
    try:
        watched = watch_once(pi, results, tmp_path)
    finally:
        os.umask(previous)
    assert watched.returncode == 0, watched.stderr
    assert stat.S_IMODE(results.stat().st_mode) == 0o600
    batch = next((pi / "done").iterdir())
    assert stat.S_IMODE(batch.stat().st_mode) == 0o700
