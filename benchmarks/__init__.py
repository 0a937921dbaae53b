"""Benchmarks and benchmark data generators (not part of the shipped ``ben_core`` package).

Run them from the repository root, e.g. ``python -m benchmarks.bench`` or
``python -m benchmarks.bench_matting --quick``; they read the synthetic weights and the lemur photo
from ``tests/data`` through ``tests/helpers.py``.
"""
