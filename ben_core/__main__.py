"""``python -m ben_core``: background removal from the command line (see ben_core.cli)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
