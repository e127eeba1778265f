#!/usr/bin/env python3
"""Classify chest X-ray films with the model in this folder: `python infer.py --help`.

The code is the package folder edge_runtime/ next to this file (its map: the edgexray
README, "Architecture"); this launcher only runs its command line (edge_runtime/cli.py),
so `python infer.py ...`, watch-folder.sh and check/ work as they always did. It needs
numpy, Pillow and a LiteRT interpreter (requirements.txt); DICOM films also need
requirements-dicom.txt.
"""

import sys
from pathlib import Path

# No __pycache__ inside the bundle: the folder stays what SHA256SUMS lists.
sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

from edge_runtime.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
