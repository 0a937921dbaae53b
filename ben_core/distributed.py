"""``python -m ben_core.distributed``, the 0.3 spelling of ``python -m ben_core distributed`` (kept for scripts).

The stage itself lives in :mod:`ben_core.apps.distributed`.
"""
import sys

from .apps.distributed import BEN2Stage, main, plan

__all__ = ["BEN2Stage", "main", "plan"]

if __name__ == "__main__":
    sys.exit(main())
