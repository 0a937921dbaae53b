"""Import a user-supplied upstream ``BEN2.py`` (GitHub PramaLLC/BEN2) for side-by-side benchmarking.

Only ``python -m benchmarks.bench --upstream PATH`` uses this, and only inside its own worker
subprocess: upstream seeds the global RNGs and sets the float32 matmul precision when imported, which
must not leak into our measurements. Upstream imports timm, torchvision, cv2 and einops at module level but its
``BEN_Base.forward`` needs none of them beyond three timm helpers and ``einops.rearrange``; when those
packages are not installed, minimal stand-ins are put in ``sys.modules`` (real packages are used when
present). The upstream source is never part of this repository.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path


def _have(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _timm_stub() -> dict[str, types.ModuleType]:
    import torch
    from torch import nn

    class DropPath(nn.Module):
        """Stochastic depth (identity in eval mode, which is all the benchmark uses)."""

        def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
            super().__init__()
            self.drop_prob, self.scale_by_keep = float(drop_prob or 0.0), scale_by_keep

        def forward(self, x):
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1.0 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep if self.scale_by_keep else x * mask

    def to_2tuple(x):
        if isinstance(x, (list, tuple)):
            return tuple(x)
        return (x, x)

    def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
        with torch.no_grad():
            return nn.init.trunc_normal_(tensor, mean=mean, std=std, a=a, b=b)

    timm = types.ModuleType("timm")
    layers = types.ModuleType("timm.layers")
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, trunc_normal_
    timm.layers = layers
    timm.__ben_bench_stub__ = True
    return {"timm": timm, "timm.layers": layers}


def _torchvision_stub() -> dict[str, types.ModuleType]:
    import numpy as np
    import torch

    class Compose:
        def __init__(self, transforms):
            self.transforms = list(transforms)

        def __call__(self, x):
            for t in self.transforms:
                x = t(x)
            return x

    class ToTensor:
        def __call__(self, pic):
            a = np.asarray(pic)
            if a.ndim == 2:
                a = a[..., None]
            t = torch.from_numpy(a.copy()).permute(2, 0, 1)
            return t.float().div(255) if t.dtype == torch.uint8 else t

    class ConvertImageDtype:
        def __init__(self, dtype):
            self.dtype = dtype

        def __call__(self, t):
            return t.to(self.dtype)

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

        def __call__(self, t):
            m = torch.as_tensor(self.mean, dtype=t.dtype).view(-1, 1, 1)
            s = torch.as_tensor(self.std, dtype=t.dtype).view(-1, 1, 1)
            return (t - m) / s

    class ToPILImage:
        def __call__(self, t):
            from PIL import Image

            a = t.detach().float().cpu().clamp(0, 1).mul(255).round().byte().numpy()
            return Image.fromarray(a if a.ndim == 2 else a.transpose(1, 2, 0))

    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    tr.Compose, tr.ToTensor, tr.ConvertImageDtype, tr.Normalize, tr.ToPILImage = (
        Compose, ToTensor, ConvertImageDtype, Normalize, ToPILImage)
    tv.transforms = tr
    tv.__ben_bench_stub__ = True
    return {"torchvision": tv, "torchvision.transforms": tr}


def _cv2_stub() -> dict[str, types.ModuleType]:
    cv2 = types.ModuleType("cv2")

    def __getattr__(name):
        raise AttributeError(f"cv2.{name}: OpenCV is not installed "
                             "(benchmarks.bench stand-in; only BEN_Base.forward is supported)")

    cv2.__getattr__ = __getattr__
    cv2.__ben_bench_stub__ = True
    return {"cv2": cv2}


def rearrange(tensor, pattern: str, **sizes):
    """A minimal ``einops.rearrange`` (axis names, parenthesised groups, the literal ``1``), enough for
    upstream's patterns, for machines without einops (the bare GPU machine of ``gpu_check``)."""
    def parse(side: str) -> list:
        groups, current = [], None
        for token in side.replace("(", " ( ").replace(")", " ) ").split():
            if token == "(":
                current = []
            elif token == ")":
                groups.append(current)
                current = None
            elif current is not None:
                current.append(token)
            else:
                groups.append([token])
        return groups

    lhs, rhs = (parse(side) for side in pattern.split("->"))
    if len(lhs) != tensor.dim():
        raise ValueError(f"rearrange: pattern {pattern!r} expects {len(lhs)} dims, got {tensor.dim()}")
    known = dict(sizes)
    for group, dim in zip(lhs, tensor.shape, strict=True):
        unknown = [name for name in group if name != "1" and name not in known]
        product = 1
        for name in group:
            product *= 1 if name == "1" else known.get(name, 1)
        if len(unknown) > 1:
            raise ValueError(f"rearrange: cannot infer {unknown} in {pattern!r}")
        if unknown:
            known[unknown[0]] = dim // product
    elementary = [name for group in lhs for name in group if name != "1"]
    x = tensor.reshape([known[name] for name in elementary])
    order = [name for group in rhs for name in group if name != "1"]
    x = x.permute([elementary.index(name) for name in order])
    out_shape = []
    for group in rhs:
        size = 1
        for name in group:
            size *= 1 if name == "1" else known[name]
        out_shape.append(size)
    return x.reshape(out_shape)


def _einops_stub() -> dict[str, types.ModuleType]:
    einops = types.ModuleType("einops")
    einops.rearrange = rearrange
    einops.__ben_bench_stub__ = True
    return {"einops": einops}


def install_stubs() -> list[str]:
    """Put stand-ins for missing timm / torchvision / cv2 into ``sys.modules``; returns the names stubbed.

    Call only in a throw-away process (the benchmark worker): it changes global import state.
    """
    stubbed: list[str] = []
    for name, factory in (("timm", _timm_stub), ("torchvision", _torchvision_stub), ("cv2", _cv2_stub),
                          ("einops", _einops_stub)):
        if name in sys.modules or _have(name):
            continue
        mods = factory()
        sys.modules.update(mods)
        stubbed.append(name)
    return stubbed


def load_upstream(path: str | Path) -> types.ModuleType:
    """Import upstream ``BEN2.py`` from ``path`` (stand-ins installed for missing optional imports).

    Returns the module (``module.BEN_Base`` is the network). Raises FileNotFoundError for a missing
    file, AttributeError when the file has no ``BEN_Base``.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(
            f"--upstream {path}: no such file; fetch it with e.g. "
            "`git clone https://github.com/PramaLLC/BEN2` and pass BEN2.py")
    install_stubs()
    spec = importlib.util.spec_from_file_location("ben2_upstream", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["ben2_upstream"] = module
    spec.loader.exec_module(module)
    if not hasattr(module, "BEN_Base"):
        raise AttributeError(f"{path}: no BEN_Base class; is this the PramaLLC/BEN2 BEN2.py?")
    return module
