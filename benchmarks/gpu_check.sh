#!/bin/sh
# The prepared device check (see benchmarks/gpu_check.py); writes into $OUT (or --out DIR).
cd "$(dirname "$0")/.." && exec python3 -m benchmarks.gpu_check "$@"
