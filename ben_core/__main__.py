"""``python -m ben_core``: background removal from the command line (:mod:`ben_core.apps.cli`);
``python -m ben_core eval ...``: scoring masks against ground truth (:mod:`ben_core.apps.evaluate`);
``python -m ben_core distributed ...``: the same cut-out on a Ray cluster (:mod:`ben_core.apps.distributed`);
``python -m ben_core export-onnx ...``: BEN2 as an ONNX file (:mod:`ben_core.apps.export_onnx`).

Only a first argument of exactly ``eval``, ``distributed`` or ``export-onnx`` selects another program; to cut
out a folder of that name, write it as ``./eval``.
"""
import sys
from typing import Optional, Sequence

from .apps.cli import main as cutout_main

EVAL_HINT = ("\nScore masks against ground truth (MAE, F, S, E, HCE; needs pysodmetrics):\n"
             "  python -m ben_core eval --pred DIR --gt DIR      (existing masks)\n"
             "  python -m ben_core eval --images DIR --gt DIR    (run BEN2 first)\n"
             "  python -m ben_core eval --help\n"
             "BEN2 as an ONNX file (onnxruntime, rembg, TensorRT; needs onnx and onnxscript):\n"
             "  python -m ben_core export-onnx -o ben2.onnx [--for rembg] [--dtype fp16]")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch: ``eval`` to :func:`ben_core.apps.evaluate.main`, ``distributed`` to
    :func:`ben_core.apps.distributed.main`, ``export-onnx`` to :func:`ben_core.apps.export_onnx.main`, anything
    else to :func:`ben_core.apps.cli.main` (whose
    ``--help`` is followed by a pointer to ``eval``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "eval":
        from .apps.evaluate import main as eval_main

        return eval_main(args[1:])
    if args and args[0] == "distributed":
        from .apps.distributed import main as distributed_main

        return distributed_main(args[1:])
    if args and args[0] == "export-onnx":
        from .apps.export_onnx import main as export_main

        return export_main(args[1:])
    code = cutout_main(args)
    if "-h" in args or "--help" in args:
        print(EVAL_HINT)
    return code


if __name__ == "__main__":
    sys.exit(main())
