"""ben_core: pure-PyTorch BEN2 background removal (network, checkpoints, pipeline)."""
