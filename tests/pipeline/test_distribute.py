"""--distribute: bad TF_CONFIG, MirroredStrategy over two logical CPUs, two local workers.

The strategy tests start TensorFlow in fresh processes: logical devices and the
multiworker cluster must be set before TensorFlow initialises, once per process.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from edge_support import one_error_line

from edgexray import artifacts
from edgexray.errors import EdgexrayError
from edgexray.pipeline import distribute

# Every subprocess is killed after this long, so a stuck collective cannot hang the suite.
SUBPROCESS_TIMEOUT = 420
# Mirrored replicas each normalise their own half-batch (batch norm is not synchronised)
# and draw their own dropout masks, so results match one process closely, not bitwise.
# On 20 val films one flipped pair moves AUC by about 0.01.
LOSS_TOLERANCE = 0.15
AUC_TOLERANCE = 0.1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def edgexray_cli(args, env_extra=None, **popen):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    command = ["nice", "-n", "10", sys.executable, "-c", "from edgexray.cli import app; app()"]
    return subprocess.Popen(
        command + list(args),
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def finish(processes):
    """Wait for every process; kill them all if one overruns the timeout."""
    try:
        return [p.communicate(timeout=SUBPROCESS_TIMEOUT) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


def tiny_config_file(path: Path, tiny_config, **changes) -> Path:
    """The conftest tiny config with the per-replica batch and learning rate halved, so
    two replicas train with the same global batch and rate as one process (linear rule)."""
    values = {
        **tiny_config.to_json(),
        "batch_size": tiny_config.batch_size // 2,
        "learning_rate": tiny_config.learning_rate / 2,
        **changes,
    }
    del values["input_spec"], values["edgexray_version"]
    path.write_text(json.dumps(values))
    return path


def assert_close_to_one_process(run_dir: Path, tiny_run: Path):
    mine = artifacts.read_json(run_dir / artifacts.METRICS)
    single = artifacts.read_json(tiny_run / artifacts.METRICS)
    assert mine["split"] == single["split"]  # the same manifest
    assert abs(mine["history"]["loss"][-1] - single["history"]["loss"][-1]) <= LOSS_TOLERANCE
    for split in ("val", "test"):
        difference = mine[split]["at_0.5"]["auc"] - single[split]["at_0.5"]["auc"]
        assert abs(difference) <= AUC_TOLERANCE, (split, mine[split], single[split])


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "not JSON"),
        ('{"cluster": {}, "task": {"type": "worker", "index": 0}}', 'no "chief" and no "worker"'),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', 'no "task"'),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
            "not in the cluster",
        ),
    ],
)
def test_bad_tf_config_is_a_one_line_error(tf_config, message):
    with pytest.raises(EdgexrayError, match=message):
        distribute.cluster_from_env({"TF_CONFIG": tf_config})


def test_multiworker_port_in_use_exits_2_with_one_line(tiny_config, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tf_config = {
            "cluster": {"worker": [f"127.0.0.1:{port}"]},
            "task": {"type": "worker", "index": 0},
        }
        config = tiny_config_file(tmp_path / "config.json", tiny_config, distribute="multiworker")
        process = edgexray_cli(
            ["train", "--config", str(config), "--out", str(tmp_path / "run")],
            {"TF_CONFIG": json.dumps(tf_config)},
        )
        ((_, stderr),) = finish([process])
    assert process.returncode == 2
    assert f"port {port}" in one_error_line(stderr)
    assert not (tmp_path / "run" / artifacts.MODEL).exists()


def test_missing_worker_is_an_error_not_a_hang(monkeypatch):
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    )
    monkeypatch.setattr(distribute, "CLUSTER_TIMEOUT_SECONDS", 1)
    with pytest.raises(EdgexrayError, match=f"no answer from {cluster['worker'][1]} within 1 s"):
        distribute.strategy("multiworker")


def test_chief_is_worker_zero_without_a_chief_job(monkeypatch):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    for index, chief in ((0, True), (1, False)):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
        assert distribute.is_chief("multiworker") is chief
    assert distribute.is_chief("none") and distribute.is_chief("mirrored")


MIRRORED_SCRIPT = """
import sys
from edgexray.compat import tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from edgexray.pipeline import distribute
from edgexray.pipeline.train import TrainConfig, train
train(TrainConfig.from_json(sys.argv[1]), sys.argv[2], verbose=0)
print("replicas", distribute.replicas("mirrored"))
"""


def test_mirrored_on_two_cpus_matches_one_process(tiny_config, tiny_run, tmp_path):
    config = tiny_config_file(tmp_path / "config.json", tiny_config, distribute="mirrored")
    run_dir = tmp_path / "mirrored run"
    process = subprocess.Popen(
        ["nice", "-n", "10", sys.executable, "-c", MIRRORED_SCRIPT, str(config), str(run_dir)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ((stdout, stderr),) = finish([process])
    assert process.returncode == 0, stderr
    assert "replicas 2" in stdout
    assert (run_dir / artifacts.MANIFEST).read_bytes() == (
        tiny_run / artifacts.MANIFEST
    ).read_bytes()
    assert_close_to_one_process(run_dir, tiny_run)


def test_two_workers_train_and_only_the_chief_writes(tiny_config, tiny_run, tmp_path):
    from edgexray.export import convert
    from edgexray.pipeline import data, scoring
    from edgexray.pipeline.model import emits_logit

    config = tiny_config_file(tmp_path / "config.json", tiny_config, distribute="multiworker")
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    processes, run_dirs, temp_dirs = [], [], []
    for index in (0, 1):
        run_dirs.append(tmp_path / f"run of worker {index}")
        temp_dirs.append(tmp_path / f"tmp of worker {index}")
        temp_dirs[-1].mkdir()
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = {"TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(temp_dirs[-1])}
        args = ["train", "--config", str(config), "--out", str(run_dirs[-1])]
        processes.append(edgexray_cli(args, env))
    (chief_out, chief_err), (worker_out, worker_err) = finish(processes)
    assert [p.returncode for p in processes] == [0, 0], chief_err + worker_err
    assert "worker finished" in worker_out and "threshold" in chief_out

    chief, worker = run_dirs
    for name in (artifacts.CONFIG, artifacts.MANIFEST, artifacts.MODEL, artifacts.METRICS):
        assert (chief / name).is_file()
    assert not worker.exists() or not any(worker.iterdir())
    assert not list(temp_dirs[1].glob("edgexray-worker-*"))  # its private dir is gone
    assert_close_to_one_process(chief, tiny_run)

    model = artifacts.load_keras(chief / artifacts.MODEL)
    samples = data.load_manifest(chief / artifacts.MANIFEST)
    paths, _ = data.select(samples, "val", Path(tiny_config.data))
    spec = tiny_config.input_spec
    images = [scoring.decode(p, spec) for p in paths[:4]]
    kind = "logit" if emits_logit(model) else "probability"
    converted = scoring.tflite_scorer(convert.to_float32(model), spec, "float32", kind)
    np.testing.assert_allclose(
        converted.probabilities(images),
        scoring.keras_scorer(model, spec).probabilities(images),
        atol=1e-4,
    )


def test_run_hashes_ignore_distribute_none_but_not_a_strategy():
    from edgexray.export.quantize import QuantizeConfig
    from edgexray.pipeline.prune import PruneConfig
    from edgexray.pipeline.train import TrainConfig
    from edgexray.run import RunConfig, stage_hashes

    plain = RunConfig(train=TrainConfig(data="x"))
    assert all("distribute" not in plain.stage_settings()[s] for s in ("train", "prune"))
    train = TrainConfig(data="x", distribute="mirrored")
    with pytest.raises(EdgexrayError, match="same distribute"):
        RunConfig(train=train)
    mirrored = RunConfig(
        train=train,
        prune=PruneConfig(distribute="mirrored"),
        quantize=QuantizeConfig(distribute="mirrored"),
    )
    assert stage_hashes(mirrored)["train"] != stage_hashes(plain)["train"]


def test_learning_rate_scales_numbers_and_decay_schedules_with_the_replicas(monkeypatch):
    from edgexray.compat import keras

    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=30, alpha=0.05)
    assert distribute.learning_rate(schedule, "none") is schedule
    monkeypatch.setattr(distribute, "replicas", lambda name: 2)
    assert distribute.learning_rate(1e-4, "mirrored") == 2e-4
    scaled = distribute.learning_rate(schedule, "mirrored")
    assert scaled.get_config() == {**schedule.get_config(), "initial_learning_rate": 4e-3}
    assert float(scaled(30)) == pytest.approx(2 * float(schedule(30)))


@pytest.mark.parametrize(
    "task, message",
    [
        ({"type": ["worker"], "index": 0}, 'task type \\["worker"\\] is not a job'),
        ({"type": {"worker": 0}, "index": 0}, "task type .* is not a job"),
        ({"type": "worker", "index": "0"}, 'index must be a whole number .*, got "0"'),
        ({"type": "worker", "index": True}, "index must be a whole number .*, got true"),
        ({"type": "worker", "index": 2}, "worker:2 is not in the cluster \\(2 worker"),
    ],
)
def test_odd_tf_config_tasks_are_one_clear_line(task, message):
    from edgexray.pipeline import distribute

    tf_config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": task}
    with pytest.raises(EdgexrayError, match=message):
        distribute.cluster_from_env({"TF_CONFIG": json.dumps(tf_config)})


@pytest.mark.slow
def test_a_peer_that_is_not_tensorflow_ends_in_one_line_not_a_hang(tmp_path):
    with socket.socket() as impostor, socket.socket() as free:
        impostor.bind(("127.0.0.1", 0))
        impostor.listen()  # accepts connections, never speaks gRPC
        free.bind(("127.0.0.1", 0))
        ports = free.getsockname()[1], impostor.getsockname()[1]
        free.close()
        tf_config = {
            "cluster": {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"]},
            "task": {"type": "chief", "index": 0},
        }
        code = (
            "from edgexray.pipeline import distribute\n"
            "distribute.CLUSTER_TIMEOUT_SECONDS = 15\n"
            "distribute.strategy('multiworker')\n"
        )
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)),
            capture_output=True,
            text=True,
            timeout=600,
        )
    # Killed by the watchdog process: the setup holds the interpreter, so no thread or
    # signal handler inside the process could end it.
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert "did not start within 15 s" in result.stderr.strip().splitlines()[-1]
    assert time.monotonic() - started < 300
