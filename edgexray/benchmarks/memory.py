"""Peak resident memory of a model, measured in a fresh Python process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edgexray.errors import EdgexrayError

# The measuring program, run by path in a fresh process, and its modes.
PROGRAM = Path(__file__).with_name("peak_rss.py")
EDGE_PEAK_RSS = "edge"  # the standalone edge runtime, loaded by path
KERAS_PEAK_RSS = "keras"  # a .keras model through tf_keras


def peak_rss_mb(mode: str, job: dict) -> float:
    """Run peak_rss.py in `mode` in a fresh Python process; its peak RSS in MiB.

    Raises:
        EdgexrayError: the process failed (its last error line is in the message).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(
            [sys.executable, str(PROGRAM), mode, json.dumps(job)],
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
