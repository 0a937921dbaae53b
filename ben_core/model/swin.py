"""Detection-style Swin Transformer backbone used by BEN2 (Swin-B, window 12).

This is the "Swin for dense prediction" variant (as in the Swin detection/segmentation code
bases that MVANet and BEN2 build on): any input size is accepted, each stage pads its token map
to a multiple of the window size, shifted blocks roll the *padded* map, and every stage output is
passed through its own LayerNorm (``norm0``..``norm3``).

Parameter and buffer names match the official BEN2 checkpoint (``backbone.*`` keys), including
the ``relative_position_index`` buffers.

All attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`; the
relative-position bias (and, in shifted blocks, the shift mask) is passed as one additive float
mask, so no attention matrix is materialised by this module.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SwinTransformer", "SwinBlock", "SwinStage", "WindowAttention", "PatchEmbed", "PatchMerging"]

# Additive value that upstream Swin uses between tokens of different shift regions (not -inf).
_SHIFT_MASK_VALUE = -100.0


def relative_position_index(window_size: int) -> Tensor:
    """Standard Swin relative position index.

    Returns:
        int64 tensor ``[ws*ws, ws*ws]``; entry ``(i, j)`` indexes the bias table row for the
        offset between window tokens ``i`` and ``j`` (row-major inside the window).
    """
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ).flatten(1)  # [2, N]
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)  # [N, N, 2]
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def window_partition(x: Tensor, window_size: int) -> Tensor:
    """``[B, Hp, Wp, C]`` -> ``[B, nW, ws*ws, C]`` with windows in row-major order.

    ``Hp`` and ``Wp`` must be multiples of ``window_size``.
    """
    b, hp, wp, c = x.shape
    ws = window_size
    x = x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (hp // ws) * (wp // ws), ws * ws, c)


def window_merge(windows: Tensor, window_size: int, hp: int, wp: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B, nW, ws*ws, C]`` -> ``[B, Hp, Wp, C]``."""
    b, _, _, c = windows.shape
    ws = window_size
    x = windows.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, c)


def shift_region_mask(hp: int, wp: int, window_size: int, shift: int, device, dtype) -> Tensor:
    """Additive attention mask for shifted windows on a padded ``hp x wp`` token map.

    Tokens that come from different regions after the cyclic shift get ``-100`` (as upstream
    Swin), others ``0``.

    Returns:
        ``[nW, ws*ws, ws*ws]`` tensor of ``dtype`` on ``device``.
    """
    ws = window_size
    region = torch.zeros(hp, wp, device=device, dtype=torch.int64)
    bounds = ((0, -ws), (-ws, -shift), (-shift, None))
    label = 0
    for h0, h1 in bounds:
        for w0, w1 in bounds:
            region[slice(h0, h1), slice(w0, w1)] = label
            label += 1
    region = window_partition(region[None, :, :, None], ws)[0, :, :, 0]  # [nW, N]
    different = region[:, None, :] != region[:, :, None]
    mask = torch.zeros(different.shape, device=device, dtype=dtype)
    return mask.masked_fill_(different, _SHIFT_MASK_VALUE)


class Mlp(nn.Module):
    """Two-layer GELU MLP: ``[..., C] -> [..., C]`` (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias.

    Args:
        dim: token channels ``C``.
        window_size: side of the square window ``ws``.
        num_heads: number of heads (``C`` must be divisible by it).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self) -> Tensor:
        """Bias added to the attention logits: ``[num_heads, N, N]`` with ``N = ws*ws``."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1).contiguous()

    def forward(self, windows: Tensor, shift_mask: Tensor | None = None) -> Tensor:
        """Attend within each window.

        Args:
            windows: ``[B, nW, N, C]`` tokens of each window.
            shift_mask: ``None`` or the additive ``[nW, N, N]`` mask of shifted windows.

        Returns:
            ``[B, nW, N, C]``.
        """
        b, nw, n, c = windows.shape
        nh = self.num_heads
        qkv = self.qkv(windows).view(b, nw, n, 3, nh, c // nh)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each [B, nW, nH, N, d]
        bias = self.relative_position_bias().to(windows.dtype)
        if shift_mask is None:
            # Same bias for every window: fold windows into the batch, broadcast the mask.
            out = F.scaled_dot_product_attention(
                q.reshape(b * nw, nh, n, -1), k.reshape(b * nw, nh, n, -1),
                v.reshape(b * nw, nh, n, -1), attn_mask=bias.unsqueeze(0),
            )
        else:
            # Bias differs per head, shift mask per window: treat (window, head) as the head
            # axis so one [1, nW*nH, N, N] mask broadcasts over the batch.
            mask = (shift_mask.unsqueeze(1) + bias.unsqueeze(0)).view(1, nw * nh, n, n)
            out = F.scaled_dot_product_attention(
                q.reshape(b, nw * nh, n, -1), k.reshape(b, nw * nh, n, -1),
                v.reshape(b, nw * nh, n, -1), attn_mask=mask,
            )
        out = out.view(b, nw, nh, n, -1).transpose(2, 3).reshape(b, nw, n, c)
        return self.proj(out)


class SwinBlock(nn.Module):
    """One (shifted-)window transformer block on a ``[B, H*W, C]`` token sequence.

    Args:
        dim: channels ``C``.
        num_heads: attention heads.
        window_size: window side ``ws``.
        shift_size: cyclic shift (0 for regular blocks, ``ws // 2`` for shifted ones).
        mlp_ratio: hidden width of the MLP relative to ``dim``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size={window_size})")
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, hw: Tuple[int, int], shift_mask: Tensor | None) -> Tensor:
        """Args:
            x: ``[B, H*W, C]`` tokens (row-major).
            hw: ``(H, W)``.
            shift_mask: ``[nW, N, N]`` additive mask for the padded map (used only when shifted).

        Returns:
            ``[B, H*W, C]``.
        """
        h, w = hw
        b, _, c = x.shape
        ws, shift = self.window_size, self.shift_size
        y = self.norm1(x).view(b, h, w, c)
        pad_b, pad_r = (-h) % ws, (-w) % ws
        if pad_b or pad_r:
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))  # zero tokens after norm1, as upstream
        hp, wp = h + pad_b, w + pad_r
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        y = self.attn(window_partition(y, ws), shift_mask if shift else None)
        y = window_merge(y, ws, hp, wp)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        if pad_b or pad_r:
            y = y[:, :h, :w, :]
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 token merging: ``[B, H*W, C]`` -> ``[B, ceil(H/2)*ceil(W/2), 2C]`` (keys norm, reduction)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tensor:
        h, w = hw
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        # Channel order (row, col) = (0,0), (1,0), (0,1), (1,1), as upstream.
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c)))


class SwinStage(nn.Module):
    """``depth`` Swin blocks (every odd one shifted by ``ws // 2``) and an optional merging.

    State-dict layout: ``blocks.{j}.*`` and ``downsample.*``.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float = 4.0, downsample: bool = True) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList([
            SwinBlock(dim, num_heads, window_size, 0 if j % 2 == 0 else self.shift_size, mlp_ratio)
            for j in range(depth)
        ])
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """Args:
            x: ``[B, H*W, C]``; hw: ``(H, W)``.

        Returns:
            ``(stage_out [B, H*W, C], next_in [B, H'*W', C'], (H', W'))`` where ``next_in`` is the
            merged sequence (or ``stage_out`` itself in the last stage).
        """
        h, w = hw
        ws = self.window_size
        hp, wp = h + (-h) % ws, w + (-w) % ws
        shift_mask = None
        if any(blk.shift_size for blk in self.blocks):
            shift_mask = shift_region_mask(hp, wp, ws, self.shift_size, x.device, x.dtype)
        for blk in self.blocks:
            x = blk(x, hw, shift_mask)
        if self.downsample is None:
            return x, x, hw
        return x, self.downsample(x, hw), ((h + 1) // 2, (w + 1) // 2)


class PatchEmbed(nn.Module):
    """Non-overlapping ``p x p`` patch projection + LayerNorm: ``[B,3,H,W]`` -> ``[B,C,H/p,W/p]``."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 128) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        if h % p or w % p:
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SwinTransformer(nn.Module):
    """Swin backbone returning five feature maps.

    Args:
        embed_dim: channels after patch embedding (128 for Swin-B).
        depths: blocks per stage.
        num_heads: heads per stage.
        window_size: attention window side.
        patch_size: patch embedding stride.
        mlp_ratio: MLP width ratio.

    ``forward(x [B,3,H,W])`` returns ``(f0, f1, f2, f3, f4)``, all NCHW contiguous:
    ``f0`` = patch embedding ``[B, C, H/4, W/4]``, ``f{i+1}`` = LayerNorm-ed output of stage ``i``
    ``[B, C*2^i, H/2^(i+2), W/2^(i+2)]`` (sizes rounded up).
    """

    def __init__(self, embed_dim: int = 128, depths: Sequence[int] = (2, 2, 18, 2),
                 num_heads: Sequence[int] = (4, 8, 16, 32), window_size: int = 12,
                 patch_size: int = 4, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError("depths and num_heads must have the same length")
        self.num_features = [embed_dim * 2 ** i for i in range(len(depths))]
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.layers = nn.ModuleList([
            SwinStage(self.num_features[i], depths[i], num_heads[i], window_size, mlp_ratio,
                      downsample=i < len(depths) - 1)
            for i in range(len(depths))
        ])
        for i, dim in enumerate(self.num_features):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        f0 = self.patch_embed(x)
        b, c, h, w = f0.shape
        outs: List[Tensor] = [f0.contiguous()]
        tokens = f0.flatten(2).transpose(1, 2)
        hw = (h, w)
        for i, stage in enumerate(self.layers):
            out, tokens, next_hw = stage(tokens, hw)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(b, hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous())
            hw = next_hw
        return tuple(outs)
