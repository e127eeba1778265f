"""Peak resident memory of a few predictions, as a program of its own.

memory.peak_rss_mb runs it by path in a fresh process: `python peak_rss.py MODE JOB`,
JOB being JSON. MODE "edge" imports the standalone edge runtime as a device has it (the package
edge_runtime from the folder JOB["runtime"]), so not one edgexray module is imported (nor
is one at the top of this file); with no model it
measures the runtime alone: interpreter import plus image decoding. MODE "keras" runs the
.keras model through edgexray (of the tree this file is in) and tf_keras.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def peak_rss_kb() -> float:
    """This process's own peak RSS in KiB.

    Linux's ru_maxrss survives fork and exec: a child of a process holding TensorFlow
    would report the parent's peak. VmHWM belongs to the address space that exec created,
    so it is this process's own; ru_maxrss is the fallback elsewhere.
    """
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


def edge(job: dict) -> None:
    sys.path.insert(0, job["runtime"])
    from edge_runtime.classifier import Classifier
    from edge_runtime.interpreter import interpreter_class
    from edge_runtime.preprocess import preprocess

    if job["model"]:
        classifier = Classifier(job["model"], job["threads"])
        for image in job["images"]:
            classifier.probability(image)
    else:
        interpreter_class()
        for image in job["images"]:
            preprocess(image, job["input"])


def keras(job: dict) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from edgexray import artifacts
    from edgexray.edge_runtime.preprocess import preprocess

    model = artifacts.load_keras(job["model"])
    for image in job["images"]:
        model(preprocess(image, job["input"])[None], training=False)


MODES = {"edge": edge, "keras": keras}


def main(argv: list[str]) -> int:
    mode, job = argv
    MODES[mode](json.loads(job))
    print(json.dumps({"peak_rss_kb": peak_rss_kb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
