"""``python -m ben_core``: background removal from the command line (see ben_core.cli), and
``python -m ben_core eval ...``: scoring masks against ground truth (see ben_core.evaluate).

Only a first argument of exactly ``eval`` selects the scorer; to cut out a folder named ``eval``,
write it as ``./eval``.
"""
import sys
from typing import Optional, Sequence

from .cli import main as cutout_main

EVAL_HINT = ("\nScore masks against ground truth (MAE, F, S, E, HCE; needs pysodmetrics):\n"
             "  python -m ben_core eval --pred DIR --gt DIR      (existing masks)\n"
             "  python -m ben_core eval --images DIR --gt DIR    (run BEN2 first)\n"
             "  python -m ben_core eval --help")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch: ``eval`` to :func:`ben_core.evaluate.main`, anything else to :func:`ben_core.cli.main`
    (whose ``--help`` is followed by a pointer to ``eval``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "eval":
        from .evaluate import main as eval_main

        return eval_main(args[1:])
    code = cutout_main(args)
    if "-h" in args or "--help" in args:
        print(EVAL_HINT)
    return code


if __name__ == "__main__":
    sys.exit(main())
