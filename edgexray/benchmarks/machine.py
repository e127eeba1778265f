"""The machine a benchmark ran on: CPU, cores, OS, library versions and load."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# CPU features that set int8 inference speed, as /proc/cpuinfo names them: two hosts both
# named "AMD EPYC" ran the same int8 model five times apart (benchmarks/README.md
# "Heatmaps"), so the name is not enough.
INT8_FEATURES = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "asimd",  # ARM NEON
    "asimddp",  # ARM dot product (Pi 5's Cortex-A76; not the Pi 4's A72)
    "i8mm",
)


def cpu_model_and_features() -> tuple[str, list[str]]:
    """The CPU's model name and which of INT8_FEATURES it has (empty off Linux)."""
    name, flags = None, set()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:  # the first core's lines stand for all
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "model name" and name is None:
            name = value
        elif key in ("flags", "Features") and not flags:  # x86 and ARM spellings
            flags = set(value.split())
    name = name or platform.processor() or platform.machine()
    return name, [feature for feature in INT8_FEATURES if feature in flags]


def machine_info() -> dict:
    """CPU, cores, OS, Python and library versions, and the load when the run started."""
    cpu, features = cpu_model_and_features()
    versions = {}
    for package in (
        "edgexray",
        "tensorflow",
        "tf-keras",
        "tensorflow-model-optimization",
        "ai-edge-litert",
        "numpy",
        "pillow",
        "matplotlib",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu,
        "cpu_int8_features": features,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
