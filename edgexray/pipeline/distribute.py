"""Training on several devices or hosts with tf.distribute: every distribution rule lives here.

The `--distribute` values (the `distribute` field of the train, prune and quantize configs):
  none         no strategy at all: the one-process code path, unchanged
  mirrored     MirroredStrategy over the local GPUs, or over the logical CPUs when none
  multiworker  MultiWorkerMirroredStrategy, one process per host, configured from TF_CONFIG

Rules:
- Batch: `batch_size` in the configs is per replica; the global batch is batch_size x
  replicas (replicas = devices per host x hosts).
- Learning rate: scaled linearly with the replicas (learning_rate x replicas), the rule
  of Goyal et al. 2017 ("Accurate, large minibatch SGD"): with the global batch r times
  larger there are r times fewer steps per epoch, each worth r small steps.
- Input: every process reads the whole manifest and tf.data shards it by data
  (AutoShardPolicy.DATA): each worker keeps every n-th element, so no file list has to
  be split by hand and no worker needs its own files.
- Manifest: the scan and split are deterministic given the data and the seed, so every
  process computes the same split itself and only the chief saves manifest.csv. Every
  host must therefore see the same files under the same --data path.
- Writes: only the chief writes into the run directory. A worker gets a private temporary
  directory instead (Keras needs every worker to save its checkpoints too, since reading
  the replicated batch-norm statistics is a collective step), deleted when it finishes.
- tfmot: prune_low_magnitude and quantize_apply wrappers are built inside
  strategy.scope(), like the model; their variables are then mirrored.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from edgexray.edge_runtime.options import option
from edgexray.errors import EdgexrayError

NAMES = ("none", "mirrored", "multiworker")
# A task whose peers do not all answer within this long stops with an error instead of
# waiting forever.
CLUSTER_TIMEOUT_SECONDS = 120
# The cluster setup's watchdog, a program of its own (see _within).
WATCHDOG = Path(__file__).with_name("watchdog.py")

_strategies: dict = {}  # one per process: TensorFlow cannot set up collectives twice
_worker_dir: dict = {}


def setting():
    """The `distribute` field of a stage's settings, the same option in every command."""
    return option(
        "none",
        "Train with tf.distribute: none, mirrored (local GPUs, else CPUs) or multiworker "
        "(TF_CONFIG; only the chief writes). See README 'Training on a cluster'.",
        choices=NAMES,
    )


def check_name(name: str) -> bool:
    """Whether `name` is a --distribute value (for the configs' checks)."""
    return name in NAMES


def cluster_from_env(environ=os.environ) -> dict:
    """The TF_CONFIG of a multiworker process, checked before TensorFlow ever sees it.

    Returns:
        {"cluster": {job: [host:port, ...]}, "task": {"type": job, "index": i}}.

    Raises:
        EdgexrayError: TF_CONFIG missing, not JSON, without a chief or worker list,
            without our task, or our task's port already in use.
    """
    tf_config = _parse_tf_config(environ)
    task = tf_config["task"]
    _listen(_port(tf_config["cluster"][task["type"]][task["index"]]), task).close()
    return tf_config


def _parse_tf_config(environ=os.environ) -> dict:
    text = environ.get("TF_CONFIG")
    if not text:
        raise EdgexrayError("--distribute multiworker needs the TF_CONFIG environment variable")
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as err:
        raise EdgexrayError(f"TF_CONFIG is not JSON ({err})") from None
    if not isinstance(tf_config, dict) or not isinstance(tf_config.get("cluster"), dict):
        raise EdgexrayError('TF_CONFIG has no "cluster" object')
    cluster = tf_config["cluster"]
    if not any(cluster.get(job) for job in ("chief", "worker")):
        raise EdgexrayError('TF_CONFIG cluster lists no "chief" and no "worker" addresses')
    unknown = set(cluster) - {"chief", "worker"}
    if unknown:
        raise EdgexrayError(f"TF_CONFIG cluster has jobs {sorted(unknown)}: only chief and worker")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(_port(a) for a in addresses):
            raise EdgexrayError(f'TF_CONFIG cluster "{job}" must be a list of "host:port"')
    if len(cluster.get("chief", [])) > 1:
        raise EdgexrayError("TF_CONFIG cluster lists more than one chief")
    task = tf_config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise EdgexrayError('TF_CONFIG has no "task" with a "type" and an "index"')
    job, index = task["type"], task["index"]
    if not isinstance(job, str) or job not in cluster:
        raise EdgexrayError(
            f"TF_CONFIG task type {json.dumps(job)} is not a job of the cluster "
            f"({', '.join(sorted(cluster))})"
        )
    if isinstance(index, bool) or not isinstance(index, int):  # true is not worker 1
        raise EdgexrayError(
            f"TF_CONFIG task index must be a whole number (0, 1, ...), got {json.dumps(index)}"
        )
    if not 0 <= index < len(cluster[job]):
        raise EdgexrayError(
            f"TF_CONFIG task {job}:{index} is not in the cluster ({len(cluster[job])} {job} "
            "address(es), counted from 0)"
        )
    return tf_config


def _port(address) -> int | None:
    host, _, port = str(address).rpartition(":")
    return int(port) if host and port.isdigit() and 0 < int(port) < 65536 else None


def strategy(name: str):
    """The tf.distribute strategy for a --distribute value; None for "none".

    Made once per process and reused by every stage of `edgexray run`.
    """
    if not check_name(name):
        raise EdgexrayError(f"unknown --distribute {name!r}: choose from {', '.join(NAMES)}")
    if name == "none":
        return None
    if name not in _strategies:
        if _strategies:
            raise EdgexrayError("one process can use only one --distribute strategy")
        _strategies[name] = _make(name)
    return _strategies[name]


def _make(name: str):
    if name == "multiworker":
        _wait_for_peers(cluster_from_env(), CLUSTER_TIMEOUT_SECONDS)
    from edgexray.compat import tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    try:
        return _within(CLUSTER_TIMEOUT_SECONDS, tf.distribute.MultiWorkerMirroredStrategy)
    except (RuntimeError, ValueError, tf.errors.OpError) as err:
        text = str(err).strip()
        first_line = text.splitlines()[0] if text else type(err).__name__
        raise EdgexrayError(f"cannot start the multiworker cluster: {first_line}") from None


def _within(seconds: float, make):
    """make() (TensorFlow's cluster setup), ended with one line after `seconds`.

    A peer that accepts connections but is not a TensorFlow task (another service on the
    port) passes `_wait_for_peers`, and the setup then blocks in C++ holding the
    interpreter: no Python thread or signal handler runs until it returns. So Ctrl-C and
    SIGTERM are set to their default action (end the process) meanwhile, and the watchdog
    is another process (watchdog.py, run by path: no package import to wait for), which
    prints the error and kills this one after `seconds` (exit status 137) unless the setup
    returned first.
    """
    import signal
    import subprocess
    import sys
    import threading

    message = (
        f"error: the multiworker cluster did not start within {seconds:.0f} s: is every "
        "address in TF_CONFIG an edgexray task (not another service)?"
    )
    main = threading.current_thread() is threading.main_thread()
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, signal.SIG_DFL) for s in stops} if main else {}
    watchdog = subprocess.Popen(
        [sys.executable, str(WATCHDOG), str(os.getpid()), str(seconds), message],
        stdin=subprocess.PIPE,
    )
    try:
        return make()
    finally:
        watchdog.stdin.close()  # end of file: the watchdog leaves without a word
        watchdog.wait()
        for number, handler in previous.items():
            if handler is not None:  # None: set outside Python, cannot be put back
                signal.signal(number, handler)


def _wait_for_peers(tf_config: dict, seconds: float) -> None:
    """Listen on our port until every other task accepts a connection on its own.

    MultiWorkerMirroredStrategy() blocks in C++, holding the interpreter, until every task
    has connected: forever when one was never started or its address is wrong, beyond
    the reach of exceptions, threads and Ctrl-C. Meeting first in Python turns that into
    an error after `seconds`.
    """
    cluster, task = tf_config["cluster"], tf_config["task"]
    own = cluster[task["type"]][task["index"]]
    peers = {address for addresses in cluster.values() for address in addresses} - {own}
    deadline = time.monotonic() + seconds
    with _listen(_port(own), task):
        while peers:
            for address in sorted(peers):
                host, _, port = address.rpartition(":")
                with contextlib.suppress(OSError):
                    socket.create_connection((host, int(port)), timeout=2).close()
                    peers.discard(address)
            if peers and time.monotonic() > deadline:
                raise EdgexrayError(
                    f"no answer from {', '.join(sorted(peers))} within {seconds:.0f} s: start "
                    "every task listed in TF_CONFIG and check the addresses"
                )
            time.sleep(0.5 if peers else 0)


def _listen(port: int, task: dict) -> socket.socket:
    """A socket listening on `port` on every interface, where TensorFlow's server will."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("", port))
        listener.listen()
    except OSError:
        listener.close()
        raise EdgexrayError(
            f"port {port} of TF_CONFIG task {task['type']}:{task['index']} is already in use"
        ) from None
    return listener


def scope(name: str):
    """strategy.scope() for model, tfmot wrapper and optimizer creation; nothing for "none"."""
    selected = strategy(name)
    return contextlib.nullcontext() if selected is None else selected.scope()


def replicas(name: str) -> int:
    """Model copies trained in step: devices per host x hosts (1 for "none")."""
    selected = strategy(name)
    return 1 if selected is None else int(selected.num_replicas_in_sync)


def global_batch(batch_size: int, name: str) -> int:
    """The batch tf.data must yield: per-replica batch_size x replicas."""
    return batch_size * replicas(name)


def learning_rate(base, name: str):
    """Linear scaling: base x replicas (see the module docstring).

    `base` is a number or a Keras decay schedule, whose initial (and peak) rate is scaled.
    """
    count = replicas(name)
    if count == 1:
        return base
    if isinstance(base, (int, float)):
        return base * count
    settings = base.get_config()
    settings["initial_learning_rate"] *= count
    if settings.get("warmup_target"):  # a schedule that rises first: its peak too
        settings["warmup_target"] *= count
    return type(base).from_config(settings)


def shard(dataset, name: str):
    """Ask tf.data to shard `dataset` across workers by element (AutoShardPolicy.DATA).

    Files are listed in the manifest, not spread over many shards, so sharding by FILE
    would leave some workers without data.
    """
    if strategy(name) is None:
        return dataset
    from edgexray.compat import tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def is_chief(name: str) -> bool:
    """Whether this process writes artifacts: always, except multiworker non-chief tasks."""
    if name != "multiworker":
        return True
    tf_config = _parse_tf_config()
    # TensorFlow's rule: the chief task, or worker 0 when the cluster names no chief.
    chief_job = "chief" if tf_config["cluster"].get("chief") else "worker"
    return tf_config["task"]["type"] == chief_job and tf_config["task"]["index"] == 0


def output_dir(run_dir: Path, name: str) -> Path:
    """Where this process writes: run_dir for the chief; for a multiworker worker, one
    private temporary directory per process, deleted when the process exits."""
    if is_chief(name):
        return Path(run_dir)
    if "private" not in _worker_dir:
        private = Path(tempfile.mkdtemp(prefix="edgexray-worker-"))
        atexit.register(shutil.rmtree, private, ignore_errors=True)
        _worker_dir["private"] = private
    return _worker_dir["private"]
