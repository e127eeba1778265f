"""`python -m edgexray.edge_runtime.infer` (and `edge_runtime.infer` in bundles made before
the runtime became a package of rooms): the device command line, now in cli.py."""

from __future__ import annotations

import sys

if __package__:
    from .cli import main
else:  # run as a lone file, outside its package
    print(
        "error: infer.py is part of the edge_runtime package: run the bundle's launcher "
        "(python infer.py beside edge_runtime/) or python -m edgexray.edge_runtime.infer",
        file=sys.stderr,
    )
    sys.exit(2)

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
