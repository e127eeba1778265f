"""The multiworker setup's watchdog, run as its own process (`python -m
edgexray.pipeline.watchdog PID SECONDS MESSAGE`; distribute._within starts it).

It waits for the pipe on its stdin to close (the setup returned) and otherwise, after
SECONDS, prints MESSAGE and kills process PID: TensorFlow's cluster setup holds that
process's interpreter, so no thread of its own could do it.

Standard library only, and nothing imported from edgexray: it must start fast, next to a
process that is importing TensorFlow.
"""

from __future__ import annotations

import os
import select
import signal
import sys


def main(argv: list[str]) -> int:
    parent, seconds, message = int(argv[0]), float(argv[1]), argv[2]
    if not select.select([sys.stdin], [], [], seconds)[0]:
        os.write(2, message.encode() + b"\n")
        os.kill(parent, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
