"""The programs: ``python -m ben_core`` (cli), ``eval`` (evaluate), ``distributed`` (Ray Data), and what
they share (jobs)."""
