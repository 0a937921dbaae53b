"""Detection-style Swin Transformer backbone used by BEN2 (Swin-B, window 12).

This is the "Swin for dense prediction" variant (as in the Swin detection/segmentation code
bases that MVANet and BEN2 build on): any input size is accepted, each stage pads its token map
to a multiple of the window size, shifted blocks roll the *padded* map, and every stage output is
passed through its own LayerNorm (``norm0``..``norm3``).

State-dict keys match the official BEN2 checkpoint (``backbone.*`` keys), including the
``relative_position_index`` buffers; every parameter is held by a leaf module (see
:mod:`ben_core.model.state_keys`).

All attention goes through :func:`torch.nn.functional.scaled_dot_product_attention`; the
relative-position bias (and, in shifted blocks, the shift mask) is passed as one additive float
mask, so no attention matrix is materialised by this module.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import exporting, gelu_, tracing_for_export
from .state_keys import keep_official_keys

__all__ = ["SwinTransformer"]

# Additive value that upstream Swin uses between tokens of different shift regions (not -inf).
_SHIFT_MASK_VALUE = -100.0
# Element budget of the per-piece temporaries (q/k/v, MLP hidden) in inference.
_CHUNK_ELEMS = 1 << 23


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


def shift_regions(hp: int, wp: int, window_size: int, shift: int) -> Tensor:
    """Region label of every window slot of a padded, cyclically shifted ``hp x wp`` map.

    Upstream Swin labels the 3x3 grid of row/column ranges ``[0, -ws)``, ``[-ws, -shift)``,
    ``[-shift, Hp)`` of the padded map; tokens of different labels must not attend each other.

    Returns:
        int64 ``[nW, ws*ws]`` (CPU).
    """
    ws = window_size
    region = torch.zeros(hp, wp, dtype=torch.int64)
    bounds = ((0, -ws), (-ws, -shift), (-shift, None))
    label = 0
    for h0, h1 in bounds:
        for w0, w1 in bounds:
            region[slice(h0, h1), slice(w0, w1)] = label
            label += 1
    return window_partition(region[None, :, :, None], ws)[0, :, :, 0]


class WindowLayout:
    """Token bookkeeping of one stage: zero-pad to a window multiple, cyclic shift, partition.

    Instead of materialising the padded map, rolling it and cutting windows (three copies),
    one index gathers the tokens of ``[B*H*W, C]`` straight into window order, and a second
    index brings window-ordered results back to row-major order (which also undoes the shift
    and drops the padding). Semantics are exactly upstream's *pad, then roll by -shift*, with
    the shift mask computed on the padded map.

    Windows are laid out window-major (``[window, image, token]``) and, for shifted layouts,
    grouped by their shift-mask type: interior windows (no mask), windows of the last window
    row, of the last window column, and the corner window. Every window of a group has the same
    shift mask, so each group is one attention call with a broadcast ``[1, nH, N, N]`` mask,
    whatever the batch size.

    Attributes:
        hw: ``(H, W)``; padded: ``(Hp, Wp)``; num_windows: ``nW``; batch: ``B``.
        groups: list of ``(first_row, num_rows, mask_id)`` over the ``nW*B`` window rows;
            ``mask_id`` indexes ``shift_masks`` (``None`` = no shift mask).
        shift_masks: ``[K, N, N]`` additive shift masks (``dtype``) of the masked groups, or None.
        gather: int64 ``[nW*B*N]``, source row in ``[B*H*W]`` of every window slot.
        pad_slots: int64, the window slots that hold zero padding.
        dest: int64 ``[nW*B*N]``, destination row of every slot (``B*H*W`` for padding).
        source_slot: int64 ``[H*W]``, the slot of every row (``dest``'s inverse on the real tokens); one-image
            layouts only (None for a batch).

    The export path builds the layout of one image (``batch=1``) and applies it to every image of a batch
    along dimension 1 (:meth:`to_windows_per_image`, :meth:`from_windows_per_image`): gathers only, so the
    batch stays a symbolic dimension of the graph.
    """

    def __init__(self, hw: Tuple[int, int], window_size: int, shift: int, batch: int,
                 device, dtype) -> None:
        # Index bookkeeping is done on the CPU (tiny, no device syncs) and moved once.
        target, device = device, torch.device("cpu")
        h, w = hw
        ws = window_size
        hp, wp = h + (-h) % ws, w + (-w) % ws
        nwh, nww = hp // ws, wp // ws
        self.hw, self.padded, self.num_windows, self.batch = (h, w), (hp, wp), nwh * nww, batch
        # Padded-map coordinates seen at every window slot after rolling by -shift.
        rows = (torch.arange(hp, device=device) + shift) % hp
        cols = (torch.arange(wp, device=device) + shift) % wp
        src_r = window_partition(rows[:, None].expand(hp, wp)[None, :, :, None], ws)[0, :, :, 0]
        src_c = window_partition(cols[None, :].expand(hp, wp)[None, :, :, None], ws)[0, :, :, 0]
        valid = (src_r < h) & (src_c < w)  # [nW, N]
        token = torch.where(valid, src_r * w + src_c, torch.zeros_like(src_r))

        win_r = torch.arange(self.num_windows, device=device) // nww
        win_c = torch.arange(self.num_windows, device=device) % nww
        if shift:
            regions = shift_regions(hp, wp, ws, shift)
            kinds = [(win_r < nwh - 1) & (win_c < nww - 1), (win_r == nwh - 1) & (win_c < nww - 1),
                     (win_r < nwh - 1) & (win_c == nww - 1), (win_r == nwh - 1) & (win_c == nww - 1)]
        else:
            regions, kinds = None, [torch.ones_like(win_r, dtype=torch.bool)]
        order, self.groups, first, masks = [], [], 0, []
        for i, kind in enumerate(kinds):
            ids = torch.nonzero(kind).flatten()
            if ids.numel() == 0:
                continue
            mask_id = None
            if regions is not None and i > 0:  # the mask shared by this group's windows
                r = regions[ids[0]]
                mask_id = len(masks)
                masks.append((r[None, :] != r[:, None]).to(torch.float32) * _SHIFT_MASK_VALUE)
            self.groups.append((first, ids.numel() * batch, mask_id))
            first += ids.numel() * batch
            order.append(ids)
        order = torch.cat(order)  # window ids in layout order
        self.shift_masks = torch.stack(masks).to(target, dtype) if masks else None

        offsets = torch.arange(batch, device=device) * (h * w)
        gather = token[order][:, None, :] + offsets[None, :, None]  # [nW, B, N]
        valid_l = valid[order][:, None, :].expand(-1, batch, -1)
        gather = gather.reshape(-1)
        flat_valid = valid_l.reshape(-1)
        self.gather = gather.to(target)
        self.pad_slots = torch.nonzero(~flat_valid).flatten().to(target)
        # Destination row of every slot; pad slots go to a scratch row past the end.
        self.dest = torch.where(flat_valid, gather, torch.full_like(gather, batch * h * w)).to(target)
        self.source_slot = None
        if batch == 1:  # only the export path reads it
            source_slot = torch.empty(h * w, dtype=torch.int64, device=device)
            source_slot[gather[flat_valid]] = torch.nonzero(flat_valid).flatten()
            self.source_slot = source_slot.to(target)

    def to_windows(self, x: Tensor) -> Tensor:
        """``[B*H*W, C]`` -> ``[nW*B*N, C]`` in layout order (pad slots are zeros)."""
        win = x.index_select(0, self.gather)
        if self.pad_slots.numel():
            win.index_fill_(0, self.pad_slots, 0)
        return win

    def from_windows(self, win: Union[Tensor, Sequence[Tensor]]) -> Tensor:
        """``[nW*B*N, C]`` (or its consecutive row blocks, e.g. one per group) -> ``[B*H*W, C]``
        in row-major token order; padding slots are dropped."""
        parts = [win] if isinstance(win, Tensor) else list(win)
        rows = self.batch * self.hw[0] * self.hw[1]
        out = parts[0].new_empty(rows + 1, parts[0].shape[-1])
        first = 0
        for part in parts:
            out.index_put_((self.dest[first:first + part.shape[0]],), part)
            first += part.shape[0]
        return out[:rows]

    def to_windows_per_image(self, x: Tensor) -> Tensor:
        """Export path of a one-image layout: ``[B, H*W, C]`` -> ``[B, nW*N, C]`` (pad slots are zeros)."""
        win = x.index_select(1, self.gather)
        if self.pad_slots.numel():
            win = win.index_fill(1, self.pad_slots, 0)
        return win

    def from_windows_per_image(self, parts: Sequence[Tensor]) -> Tensor:
        """Export path of a one-image layout: ``[B, rows_g*N, C]`` blocks of consecutive window groups ->
        ``[B, H*W, C]`` in row-major token order."""
        return torch.cat(list(parts), dim=1).index_select(1, self.source_slot)


class Mlp(nn.Module):
    """Two-layer GELU MLP: ``[..., C] -> [..., C]`` (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(gelu_(self.fc1(x)))


class RelativePositionBias(nn.Module):
    """Swin's learned relative-position bias of one window attention (a leaf module, as timm's BEiT has).

    Holds ``relative_position_bias_table [(2*ws-1)**2, num_heads]`` and the ``relative_position_index``
    buffer ``[ws*ws, ws*ws]`` (loaded from the checkpoint, not recomputed); returns the bias.
    """

    def __init__(self, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))

    def forward(self) -> Tensor:
        """Bias added to the attention logits: ``[num_heads, N, N]`` with ``N = ws*ws``."""
        n = self.window_size * self.window_size
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1).contiguous()


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative-position bias.

    Args:
        dim: token channels ``C``.
        window_size: side of the square window ``ws``.
        num_heads: number of heads (``C`` must be divisible by it).

    Keys (the official ones): ``relative_position_bias_table``, ``relative_position_index``, ``qkv.*``,
    ``proj.*``. The bias lives in the leaf child ``position_bias`` (so that ComfyUI's dynamic VRAM moves
    and offloads it like every other weight; see :mod:`ben_core.model.state_keys`).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be divisible by num_heads {num_heads}")
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.position_bias = RelativePositionBias(window_size, num_heads)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        keep_official_keys(self, {f"position_bias.{name}": name
                                  for name in ("relative_position_bias_table", "relative_position_index")})

    @property
    def relative_position_bias_table(self) -> nn.Parameter:
        """The bias table under its official name (held by ``position_bias``)."""
        return self.position_bias.relative_position_bias_table

    @property
    def relative_position_index(self) -> Tensor:
        """The index buffer under its official name (held by ``position_bias``)."""
        return self.position_bias.relative_position_index

    def relative_position_bias(self) -> Tensor:
        """Bias added to the attention logits: ``[num_heads, N, N]`` with ``N = ws*ws``."""
        return self.position_bias()

    def forward(self, windows: Tensor, layout: WindowLayout) -> List[Tensor]:
        """Attend within each window.

        Args:
            windows: ``[nW*B*N, C]`` tokens in ``layout`` order (``N = ws*ws``); on the export path
                ``[B, nW*N, C]`` of a one-image layout.
            layout: the :class:`WindowLayout` that produced them (window groups, shift masks).

        Returns:
            list of ``[rows_g*N, C]`` (export path: ``[B, rows_g*N, C]``) outputs of the consecutive window
            groups (together the result before the output projection ``proj``).
        """
        c, nh, n = self.dim, self.num_heads, self.window_size * self.window_size
        lead = windows.shape[:-2]  # () or, on the export path, (B,)
        bias = self.relative_position_bias()  # [nH, N, N]; cast to the q/k/v dtype below
        masked = None
        # Windows are processed in pieces of at most ~8M q/k/v elements to bound temporaries.
        step = max(1, _CHUNK_ELEMS // (3 * c * n))
        outs = []
        for first, count, mask_id in layout.groups:
            for start in range(first, first + count, step):
                stop = min(start + step, first + count)
                qkv = self.qkv(windows[..., start * n:stop * n, :]).reshape(-1, n, 3, nh, c // nh)
                # Strided views [windows, nH, N, d]; SDPA reads them without copies.
                q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
                if bias.dtype != q.dtype:
                    bias = bias.to(q.dtype)
                    masked = None
                mask = bias
                if mask_id is not None:
                    if masked is None:  # [K, nH, N, N]: bias + each group's shift mask
                        masked = bias.unsqueeze(0) + layout.shift_masks.to(bias.dtype).unsqueeze(1)
                    mask = masked[mask_id]
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(0))
                outs.append(out.transpose(1, 2).reshape(*lead, -1, c))  # [windows*N, C]: a view on the fast path
        return outs


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

    def forward(self, x: Tensor, layout: WindowLayout) -> Tensor:
        """Args:
            x: ``[B, H*W, C]`` tokens (row-major).
            layout: the stage's :class:`WindowLayout` for this block's shift.

        Returns:
            ``[B, H*W, C]``.
        """
        b, n, c = x.shape
        if exporting():
            win = self.attn(layout.to_windows_per_image(self.norm1(x)), layout)
            x = x + self.attn.proj(layout.from_windows_per_image(win))
            return x + self.mlp(self.norm2(x))
        win = layout.to_windows(self.norm1(x).view(b * n, c))
        win = self.attn(win, layout)
        # proj is per token, so it commutes with the reordering; run it on unpadded tokens.
        x = x + self.attn.proj(layout.from_windows(win)).view(b, n, c)  # new tensor
        if torch.is_grad_enabled():
            return x + self.mlp(self.norm2(x))
        # Inference: per-token MLP in place, in row pieces (bounded hidden activations).
        rows = max(1, _CHUNK_ELEMS // self.mlp.fc1.out_features)
        for part in x.view(b * n, c).split(rows):
            part.add_(self.mlp(self.norm2(part)))
        return x


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
            h, w = h + h % 2, w + w % 2
        # Concatenated channel order (row, col) = (0,0), (1,0), (0,1), (1,1), as upstream:
        # column parity is the outer index, row parity the inner one.
        x = x.view(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5)
        return self.reduction(self.norm(x.reshape(b, (h // 2) * (w // 2), 4 * c)))


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
        # (plain, shifted) WindowLayouts per input geometry: built once on the CPU and moved once, not
        # on every forward (on a GPU each build was a dozen blocking host-to-device copies).
        self._layouts: dict = {}

    def layouts(self, hw: Tuple[int, int], batch: int, device, dtype) -> Tuple["WindowLayout", "WindowLayout"]:
        """The ``(plain, shifted)`` :class:`WindowLayout` pair for ``hw`` and ``batch`` (cached, at most 8).

        A layout is index bookkeeping that a tracer cannot follow (``nonzero``): while ``torch.export``
        traces, the pair must already be cached (one eager forward on the export path at that size builds it).
        """
        key = (tuple(hw), batch, torch.device(device), dtype)
        pair = self._layouts.get(key)
        if pair is None and tracing_for_export():
            raise RuntimeError(
                f"no window layout for a {hw[0]}x{hw[1]} token map was built before tracing; call the backbone's "
                "build_export_layouts for this input size first (ben_core.model.export does)")
        if pair is None:
            if len(self._layouts) >= 8:
                self._layouts.clear()
            ws = self.window_size
            pair = self._layouts[key] = (WindowLayout(hw, ws, 0, batch, device, dtype),
                                         WindowLayout(hw, ws, self.shift_size, batch, device, dtype))
        return pair

    def forward(self, x: Tensor, hw: Tuple[int, int]) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """Args:
            x: ``[B, H*W, C]``; hw: ``(H, W)``.

        Returns:
            ``(stage_out [B, H*W, C], next_in [B, H'*W', C'], (H', W'))`` where ``next_in`` is the
            merged sequence (or ``stage_out`` itself in the last stage).
        """
        h, w = hw
        if exporting():  # one image's layout for any batch; shift masks are cast where they are used
            plain, shifted = self.layouts(hw, 1, x.device, torch.float32)
        else:
            plain, shifted = self.layouts(hw, x.shape[0], x.device, x.dtype)
        for blk in self.blocks:
            x = blk(x, shifted if blk.shift_size else plain)
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

    ``forward(x [B,3,H,W])`` returns ``(f0, f1, f2, f3, f4)``, NCHW-shaped (channels-last memory):
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

    def build_export_layouts(self, hw: Tuple[int, int], device) -> None:
        """Build (and cache) every stage's one-image window layouts for an ``hw`` input, as the export path reads
        them: what a tracer cannot build itself (see :meth:`SwinStage.layouts`)."""
        p = self.patch_embed.patch_size
        h, w = -(-hw[0] // p), -(-hw[1] // p)
        for stage in self.layers:
            stage.layouts((h, w), 1, device, torch.float32)
            h, w = (h + 1) // 2, (w + 1) // 2

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Args:
            x: ``[B, 3, H, W]`` float.

        Returns:
            ``(f0, ..., f4)`` NCHW-shaped feature maps stored channels-last (they are permuted
            views of the token tensors; call ``.contiguous()`` if a plain layout is needed).
        """
        f0 = self.patch_embed(x)
        b, _, h, w = f0.shape
        outs: List[Tensor] = [f0]
        tokens = f0.permute(0, 2, 3, 1).reshape(b, h * w, -1)
        hw = (h, w)
        for i, stage in enumerate(self.layers):
            out, tokens, next_hw = stage(tokens, hw)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(b, hw[0], hw[1], -1).permute(0, 3, 1, 2))
            hw = next_hw
        return tuple(outs)
