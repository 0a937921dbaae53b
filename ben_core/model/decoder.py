"""BEN2's MVANet-style decoder blocks: conv blocks, MCLM, MCRM and the positional encoding.

Layout convention of the decoder: for ``B`` input images the backbone sees ``5*B`` images, in
groups of five per input image: the four quadrants of the full-resolution image (order
top-left, top-right, bottom-left, bottom-right) followed by the half-resolution global view.
MCLM/MCRM take grouped channels-last tensors ``[B, 5, h, w, C]`` and process all ``B`` images
at once; conv blocks take ``[N, C, H, W]`` and run channels-last.

Attention uses :func:`torch.nn.functional.scaled_dot_product_attention` (:func:`.ops.attention`: large bf16
cross-attentions on the CPU in query blocks); the projections' state-dict
keys are those of :class:`torch.nn.MultiheadAttention` (``in_proj_weight``, ``in_proj_bias``,
``out_proj.*``) so the official checkpoint loads unchanged.
"""
from __future__ import annotations

import math
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layout import from_nhwc, quadrants, stitch, to_nhwc
from .ops import attention, gelu_, instance_norm_gelu_, tracing_for_export
from .state_keys import keep_official_keys

__all__ = ["ConvNormGELU", "PackedProjection", "MultiheadProjections", "MCLM", "MCRM", "sine_position_encoding"]


class ConvNormGELU(nn.Sequential):
    """``Conv3x3 -> InstanceNorm2d -> GELU`` (upstream ``make_cbr``; keys ``0.weight``, ``0.bias``).

    ``[N, Cin, H, W] -> [N, Cout, H, W]`` (channels-last memory).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1),
            nn.InstanceNorm2d(out_dim),
            nn.GELU(),
        )

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - see class docstring
        return instance_norm_gelu_(self[0](x.contiguous(memory_format=torch.channels_last)))


class PackedProjection(nn.Module):
    """The packed q/k/v input projection of ``nn.MultiheadAttention(dim, ...)`` as a leaf module:
    ``weight [3*dim, dim]`` (rows q, k, v), ``bias [3*dim]``. Not called: the attention slices it."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.bias = nn.Parameter(torch.zeros(3 * dim))


class MultiheadProjections(nn.Module):
    """Parameters of ``nn.MultiheadAttention(dim, num_heads)`` used with SDPA.

    Keys (the official ones): ``in_proj_weight [3*dim, dim]``, ``in_proj_bias [3*dim]``, ``out_proj.weight``,
    ``out_proj.bias``; the packed projection lives in the leaf child ``in_proj`` (so that ComfyUI's dynamic
    VRAM moves and offloads it like every other weight; see :mod:`ben_core.model.state_keys`). The
    attention itself is computed by the owning block (often several of these are stacked and applied
    together).
    """

    def __init__(self, dim: int, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj = PackedProjection(dim)
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj.weight)  # after out_proj, in nn.MultiheadAttention's order
        keep_official_keys(self, {"in_proj.weight": "in_proj_weight", "in_proj.bias": "in_proj_bias"})

    @property
    def in_proj_weight(self) -> nn.Parameter:
        """The packed q/k/v weight under its official name."""
        return self.in_proj.weight

    @property
    def in_proj_bias(self) -> nn.Parameter:
        """The packed q/k/v bias under its official name."""
        return self.in_proj.bias


def _stacked_projection(mods: Sequence[MultiheadProjections], which: str) -> Tuple[Tensor, Tensor]:
    """Stack one projection of several attention modules.

    Args:
        mods: ``G`` attention modules of width ``C``.
        which: ``"q"``, ``"k"``, ``"v"`` or ``"out"``.

    Returns:
        ``(weight [G, C, C] transposed for ``x @ w``, bias [G, 1, C])``.
    """
    if which == "out":
        w = torch.stack([m.out_proj.weight for m in mods])
        b = torch.stack([m.out_proj.bias for m in mods])
    else:
        i = "qkv".index(which)
        c = mods[0].out_proj.weight.shape[0]
        w = torch.stack([m.in_proj.weight[i * c:(i + 1) * c] for m in mods])
        b = torch.stack([m.in_proj.bias[i * c:(i + 1) * c] for m in mods])
    return w.transpose(1, 2), b.unsqueeze(1)


def _grouped_linear(x: Tensor, wb: Tuple[Tensor, Tensor]) -> Tensor:
    """Per-group affine map: ``x [G, L, C] -> [G, L, C']`` with ``wb`` from ``_stacked_projection``."""
    w, b = wb
    return torch.baddbmm(b.to(x.dtype), x, w.to(x.dtype))


def grouped_attention(mods: Sequence[MultiheadProjections], query: Tensor, key: Tensor,
                      value: Tensor) -> Tensor:
    """Single-head attention of ``G`` independent ``nn.MultiheadAttention`` modules, batched.

    Args:
        mods: ``G`` modules (group ``g`` of the inputs uses ``mods[g]``); one head each.
        query: ``[B, G, Lq, C]``; key, value: ``[B, G, Lk, C]``.

    Returns:
        ``[B, G, Lq, C]`` = ``out_proj(softmax(q k^T / sqrt(C)) v)`` per group, as
        ``nn.MultiheadAttention`` in eval mode (no dropout), computed with SDPA.
    """
    if any(m.num_heads != 1 for m in mods):
        raise NotImplementedError("grouped_attention supports single-head modules only")
    b, g, lq, c = query.shape
    lk = key.shape[2]

    def proj(t: Tensor, which: str, length: int) -> Tensor:
        t = t.transpose(0, 1).reshape(g, b * length, c)
        return _grouped_linear(t, _stacked_projection(mods, which)).view(g, b, length, c).transpose(0, 1)

    q = proj(query, "q", lq)
    k = proj(key, "k", lk)
    v = proj(value, "v", lk)
    out = attention(q, k, v)  # [B, G, Lq, C]
    out = out.transpose(0, 1).reshape(g, b * lq, c)
    out = _grouped_linear(out, _stacked_projection(mods, "out"))
    return out.view(g, b, lq, c).transpose(0, 1)


def sine_position_encoding(h: int, w: int, num_pos_feats: int, device, dtype,
                           temperature: float = 10000.0) -> Tensor:
    """Normalised 2-D sine positional encoding (DETR ``PositionEmbeddingSine``, ``normalize=True``).

    Returns:
        ``[h*w, 2*num_pos_feats]`` (row-major positions; channels ``[y-part, x-part]``, each
        interleaving sin/cos), computed in float32 on ``device`` and cast to ``dtype``.
    """
    scale, eps = 2 * math.pi, 1e-6
    y = torch.arange(1, h + 1, device=device, dtype=torch.float32)
    x = torch.arange(1, w + 1, device=device, dtype=torch.float32)
    y = (y - 0.5) / (y[-1:] + eps) * scale
    x = (x - 0.5) / (x[-1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, device=device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)

    def encode(pos: Tensor) -> Tensor:  # [n] -> [n, num_pos_feats]
        p = pos[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(h, w, num_pos_feats)
    pos_x = encode(x)[None, :, :].expand(h, w, num_pos_feats)
    return torch.cat((pos_y, pos_x), dim=2).reshape(h * w, 2 * num_pos_feats).to(dtype)


def _pool_size(size: int, ratio: int) -> int:
    """Pooled side length, Python ``round`` (banker's rounding) exactly as upstream."""
    return round(size / ratio)


def _ffn(x: Tensor, lin_a: nn.Linear, lin_b: nn.Linear) -> Tensor:
    """Feed-forward ``lin_b(GELU(lin_a(x)))`` on ``[..., C]`` tokens."""
    return lin_b(gelu_(lin_a(x)))


class MCLM(nn.Module):
    """Multi-view complementary localisation module on the deepest features.

    The global view attends to multi-scale pooled copies of the stitched local views (with sine
    positional encodings), then each local view attends to its quadrant of the refreshed global
    view. Keys: ``attention.{0..4}``, ``linear1..4``, ``norm1``, ``norm2``.

    Args:
        d_model: channels ``C``.
        num_heads: heads of each attention (BEN2 uses 1).
        pool_ratios: pooling ratios relative to the local view size (BEN2: 1, 4, 8).
    """

    def __init__(self, d_model: int = 128, num_heads: int = 1, pool_ratios: Sequence[int] = (1, 4, 8)) -> None:
        super().__init__()
        self.d_model = d_model
        self.pool_ratios = tuple(pool_ratios)
        self.attention = nn.ModuleList([MultiheadProjections(d_model, num_heads) for _ in range(5)])
        self.linear1 = nn.Linear(d_model, 2 * d_model)
        self.linear2 = nn.Linear(2 * d_model, d_model)
        self.linear3 = nn.Linear(d_model, 2 * d_model)
        self.linear4 = nn.Linear(2 * d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self._pos_cache: Dict[tuple, Tuple[Tensor, Tensor]] = {}

    def _positions(self, h: int, w: int, device, dtype) -> Tuple[Tensor, Tensor]:
        """``(global [h*w, C], pooled [L_pool, C])`` encodings, cached per (h, w, device, dtype) (read but not
        filled while a graph is traced: the cache must never hold a tracer's tensors)."""
        key = (h, w, device, dtype)
        if key in self._pos_cache:
            return self._pos_cache[key]
        npf = self.d_model // 2
        glob = sine_position_encoding(h, w, npf, device, dtype)
        pooled = torch.cat([
            sine_position_encoding(_pool_size(h, r), _pool_size(w, r), npf, device, dtype)
            for r in self.pool_ratios
        ])
        if not tracing_for_export():
            if len(self._pos_cache) > 8:
                self._pos_cache.clear()
            self._pos_cache[key] = (glob, pooled)
        return glob, pooled

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``[B, 5, h, w, C]`` channels-last views: four local views then the global view.

        Returns:
            ``[B, 5, h, w, C]`` refreshed local and global features.
        """
        b, _, h, w, c = x.shape
        loc = x[:, :4]
        stitched = from_nhwc(stitch(loc))  # [B, C, 2h, 2w]
        pools = torch.cat([
            to_nhwc(F.adaptive_avg_pool2d(stitched, (_pool_size(h, r), _pool_size(w, r)))).flatten(1, 2)
            for r in self.pool_ratios
        ], dim=1)  # [B, Lp, C]
        g_pos, p_pos = self._positions(h, w, x.device, x.dtype)

        g = x[:, 4].reshape(b, h * w, c)
        attn = grouped_attention(self.attention[:1], (g + g_pos)[:, None], (pools + p_pos)[:, None],
                                 pools[:, None])[:, 0]
        g = self.norm1(g + attn)
        g = self.norm2(g + _ffn(g, self.linear1, self.linear2))  # [B, hw, C]

        # Each local view attends to its quadrant of the refreshed global view.
        g_quads = quadrants(g.view(b, h, w, c)).flatten(2, 3)  # [B, 4, hw/4, C]
        u = loc.reshape(b, 4, h * w, c)
        attn = grouped_attention(self.attention[1:], u, g_quads, g_quads)
        u = self.norm1(u + attn)
        u = self.norm2(u + _ffn(u, self.linear3, self.linear4))  # [B, 4, hw, C]
        return torch.cat([u, g[:, None]], dim=1).view(b, 5, h, w, c)


class MCRM(nn.Module):
    """Multi-view complementary refinement module (one decoder stage).

    Local views are gated by a saliency map of the global view, attend to multi-scale pools of
    their quadrant of the global view, and the refreshed local views are written back into the
    global view (nearest-neighbour downsampling). Keys: ``attention.{0..3}``, ``linear3``,
    ``linear4``, ``norm1``, ``norm2``, ``sal_conv``.

    Args:
        d_model: channels ``C``.
        num_heads: heads of each attention (BEN2 uses 1).
        pool_ratios: pooling ratios relative to the local view size (BEN2: 2, 4, 8).
    """

    def __init__(self, d_model: int = 128, num_heads: int = 1, pool_ratios: Sequence[int] = (2, 4, 8)) -> None:
        super().__init__()
        self.pool_ratios = tuple(pool_ratios)
        self.attention = nn.ModuleList([MultiheadProjections(d_model, num_heads) for _ in range(4)])
        self.linear3 = nn.Linear(d_model, 2 * d_model)
        self.linear4 = nn.Linear(2 * d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.sal_conv = nn.Conv2d(d_model, 1, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``[B, 5, h, w, C]`` channels-last views (four local, then global; ``h, w`` even).

        Returns:
            ``[B, 5, h, w, C]``.
        """
        b, _, h, w, c = x.shape
        loc, glb = x[:, :4], x[:, 4]  # [B, 4, h, w, C], [B, h, w, C]

        # Saliency gate: the global map's quadrants, nearest-upsampled 2x, scale each local view.
        gate = torch.sigmoid(F.linear(glb, self.sal_conv.weight.view(1, c), self.sal_conv.bias))
        gate = quadrants(gate)  # [B, 4, h/2, w/2, 1]
        gate = gate[:, :, :, None, :, None].expand(b, 4, h // 2, 2, w // 2, 2, 1).reshape(b, 4, h, w, 1)
        tokens = (loc * gate).view(b, 4, h * w, c)

        glb_quads = from_nhwc(quadrants(glb).flatten(0, 1))  # [B*4, C, h/2, w/2]
        pools = torch.cat([
            to_nhwc(F.adaptive_avg_pool2d(glb_quads, (_pool_size(h, r), _pool_size(w, r)))).flatten(1, 2)
            for r in self.pool_ratios
        ], dim=1).view(b, 4, -1, c)  # [B, 4, Lp, C]

        src = self.norm1(tokens + grouped_attention(self.attention, tokens, pools, pools))
        src = self.norm2(src + _ffn(src, self.linear3, self.linear4)).view(b, 4, h, w, c)

        # Refreshed global view: add the stitched local views, nearest-downsampled 2x.
        glb = glb + stitch(src[:, :, ::2, ::2])
        return torch.cat([src, glb[:, None]], dim=1)
