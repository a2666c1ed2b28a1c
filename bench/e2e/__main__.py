"""`python bench/e2e ...`: run the benchmark (see `e2e.cli` for the options).

Run as a folder, Python puts this folder itself first on sys.path and runs this file outside
its package; the package's modules import one another as `e2e.*`, so bench/ takes the folder's
place (pip's `__main__.py` does the same). `python -m e2e` from bench/ needs no such step.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from e2e.cli import main  # only once bench/ is on sys.path

if __name__ == "__main__":
    sys.exit(main())
