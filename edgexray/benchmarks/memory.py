"""Peak resident memory of a model, measured in a fresh Python process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from edgexray.errors import EdgexrayError

# Linux's ru_maxrss survives fork and exec: a child of this process (which may hold
# TensorFlow) would report our peak, not its own. VmHWM belongs to the address space
# that exec created, so it is the child's own peak; ru_maxrss is the fallback elsewhere.
_PEAK = r"""
def _peak_rss_kb():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1])
    except OSError:
        pass
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else float(peak)
"""

# Runs the standalone edge runtime file itself (loaded by path, so not a single edgexray
# module is imported) on a few images and reports the process's peak resident memory.
# With no model it measures the runtime alone: interpreter import plus image decoding.
EDGE_PEAK_RSS = (
    "import importlib.util, json, sys\n"
    + _PEAK
    + r"""
job = json.loads(sys.argv[1])
spec = importlib.util.spec_from_file_location("edge_infer", job["runtime"])
infer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(infer)
if job["model"]:
    classifier = infer.Classifier(job["model"], job["threads"])
    for image in job["images"]:
        classifier.probability(image)
else:
    infer.interpreter_class()
    for image in job["images"]:
        infer.preprocess(image, job["input"])
print(json.dumps({"peak_rss_kb": _peak_rss_kb()}))
"""
)

KERAS_PEAK_RSS = (
    "import json, sys\n"
    + _PEAK
    + r"""
job = json.loads(sys.argv[1])
from edgexray import artifacts
from edgexray.edge_runtime.infer import preprocess
model = artifacts.load_keras(job["model"])
for image in job["images"]:
    model(preprocess(image, job["input"])[None], training=False)
print(json.dumps({"peak_rss_kb": _peak_rss_kb()}))
"""
)


def peak_rss_mb(script: str, job: dict) -> float:
    """Run a measuring script in a fresh Python process; its peak RSS in MiB.

    Raises:
        EdgexrayError: the process failed (its last error line is in the message).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(job)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise EdgexrayError(f"memory measurement of {job['model']} took over 600 s") from None
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        errors = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        raise EdgexrayError(f"memory measurement of {job['model']} failed: {errors[-1]}")
    return json.loads(lines[-1])["peak_rss_kb"] / 1024
