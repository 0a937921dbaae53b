"""``python -m ben_core``: background removal from the command line (see ben_core.cli)."""
import sys

from ben_core.cli import main

if __name__ == "__main__":
    sys.exit(main())
