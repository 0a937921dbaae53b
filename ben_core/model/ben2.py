"""BENBase: the BEN2 base network (Swin-B backbone + MVANet-style decoder), returning logits.

The official BEN2 base checkpoint (``BEN2_Base.pth['model_state_dict']`` / ``model.safetensors``, 535
keys) loads strictly after :func:`checkpoint_filter_fn`, which drops by name the five deep-supervision
heads of training (``sideout1..5``) that inference never runs; every other key is used.

Forward pass for an image batch ``x [B, 3, S, S]`` (ImageNet-normalised):

1. The backbone sees ``5*B`` images of side ``S/2``: the four quadrants of every image and
   the image downscaled by 2 (bilinear), grouped per image.
2. The decoder refines the five feature levels (MCLM on the deepest one, then four
   MCRM + conv stages), stitches the quadrants back and fuses the global view.
3. A head upsamples to ``S`` with a shallow full-resolution branch (a 3x3 conv of the input)
   and a final conv gives one logit per pixel (apply ``sigmoid`` for probabilities).
"""
from __future__ import annotations

from typing import Dict, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import MCLM, MCRM, ConvNormGELU
from .layout import from_nhwc, quadrants, stitch, to_nhwc
from .ops import conv3x3_then_box_down, exporting, instance_norm_gelu_, nearest_up2_conv3x3, upsample_norm_gelu_conv
from .swin import SwinTransformer

__all__ = ["BENBase", "checkpoint_filter_fn", "IMAGENET_MEAN", "IMAGENET_STD", "UNUSED_KEYS"]

#: Input normalisation the network was trained with (RGB 0..1 -> (x - mean) / std).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Keys of the official checkpoint that inference never uses: the deep-supervision heads of training
#: (``sideout1..5``, a 3x3 conv each). :func:`checkpoint_filter_fn` drops exactly these names.
UNUSED_KEYS = tuple(f"sideout{i}.0.{p}" for i in range(1, 6) for p in ("weight", "bias"))


def checkpoint_filter_fn(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The official checkpoint's state dict without :data:`UNUSED_KEYS` (timm's pattern): every other
    key is used by ``BENBase.load_state_dict(..., strict=True)``. Returns a new dict (tensors shared)."""
    return {k: v for k, v in state_dict.items() if k not in UNUSED_KEYS}


def _upsample(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear upsampling of ``x`` to ``like``'s spatial size (``align_corners=False``), as upstream."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class BENBase(nn.Module):
    """The BEN2 base network.

    Args:
        embed_dim: decoder width and Swin embedding width (128 for the official model).
        depths, num_heads, window_size: Swin backbone configuration (Swin-B, window 12).

    ``forward(x)``: ``x`` float ``[B, 3, S, S]`` ImageNet-normalised (square, S a multiple of
    ``size_multiple`` = 128 and at least ``min_size`` = 384; the model is trained at 1024), returns
    logits ``[B, 1, S, S]`` of ``x``'s dtype.
    """

    #: The size the network was trained at, and the working sizes offered to users (best first).
    native_size = 1024
    working_sizes = (1024, 768, 512)
    #: The input side must be a multiple of this (the predictor checks its working size against it).
    size_multiple = 128
    #: Smallest side: below it MCLM's coarsest pooled view of the S/64 feature map rounds to 0x0
    #: (one attention source silently vanishes and the backward pass fails).
    min_size = 384

    def __init__(self, embed_dim: int = 128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                 window_size: int = 12) -> None:
        super().__init__()
        c = embed_dim
        self.backbone = SwinTransformer(embed_dim, depths, num_heads, window_size)
        feats = self.backbone.num_features  # 128, 256, 512, 1024
        self.output5 = ConvNormGELU(feats[3], c)
        self.output4 = ConvNormGELU(feats[2], c)
        self.output3 = ConvNormGELU(feats[1], c)
        self.output2 = ConvNormGELU(feats[0], c)
        self.output1 = ConvNormGELU(embed_dim, c)
        self.multifieldcrossatt = MCLM(c, 1, (1, 4, 8))
        self.conv1 = ConvNormGELU(c, c)
        self.conv2 = ConvNormGELU(c, c)
        self.conv3 = ConvNormGELU(c, c)
        self.conv4 = ConvNormGELU(c, c)
        self.dec_blk1 = MCRM(c, 1, (2, 4, 8))
        self.dec_blk2 = MCRM(c, 1, (2, 4, 8))
        self.dec_blk3 = MCRM(c, 1, (2, 4, 8))
        self.dec_blk4 = MCRM(c, 1, (2, 4, 8))
        self.insmask_head = nn.Sequential(
            nn.Conv2d(c, 3 * c, kernel_size=3, padding=1), nn.InstanceNorm2d(3 * c), nn.GELU(),
            nn.Conv2d(3 * c, 3 * c, kernel_size=3, padding=1), nn.InstanceNorm2d(3 * c), nn.GELU(),
            nn.Conv2d(3 * c, c, kernel_size=3, padding=1),
        )
        self.shallow = nn.Sequential(nn.Conv2d(3, c, kernel_size=3, padding=1))
        self.upsample1 = ConvNormGELU(c, c)
        self.upsample2 = ConvNormGELU(c, c)
        self.output = nn.Sequential(nn.Conv2d(c, 1, kernel_size=3, padding=1))

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def _check_input(x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"BENBase expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"BENBase expects x of shape [B, 3, S, S], got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("BENBase got an empty batch (B = 0); pass at least one image")
        if not x.is_floating_point():
            raise TypeError(f"BENBase expects a float tensor (ImageNet-normalised), got {x.dtype}")
        h, w = x.shape[-2:]
        m = BENBase.size_multiple
        if h % m or w % m or h == 0 or w == 0:
            raise ValueError(
                f"BENBase needs a side that is a multiple of {m} (e.g. 512, 768, 1024), got {h}x{w}; "
                "resize the image first (BENPredictor does this)")
        if h < BENBase.min_size or w < BENBase.min_size:
            raise ValueError(
                f"BENBase needs a side of at least {BENBase.min_size} (512, 768 or 1024 recommended), got "
                f"{h}x{w}; resize the image up first (BENPredictor does this)")
        if h != w:
            raise ValueError(
                f"BENBase expects a square input [B, 3, S, S], got {h}x{w}; resize the image to S x S "
                "first (BENPredictor does this and resizes the alpha back)")

    @staticmethod
    def _backbone_input(x: Tensor) -> Tensor:
        """``[B, 3, S, S] -> [5B, 3, S/2, S/2]``: per image 4 quadrants (TL, TR, BL, BR) + global view."""
        b, _, h, w = x.shape
        glb = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        quads = quadrants(x.permute(0, 2, 3, 1)).permute(0, 1, 4, 2, 3)  # [B, 4, 3, S/2, S/2]
        views = torch.cat([quads, glb[:, None]], dim=1)  # [B, 5, 3, S/2, S/2]
        return views.reshape(b * 5, 3, h // 2, w // 2)

    def forward_features(self, x: Tensor) -> Tuple[Tensor, ...]:
        """Backbone features of the 5 views of each image.

        Args:
            x: ``[B, 3, S, S]`` ImageNet-normalised.

        Returns:
            ``(f0, ..., f4)``, each ``[5B, C_k, h_k, w_k]`` with views grouped per image (4 quadrants
            then the global view): C = 128, 128, 256, 512, 1024 at S/8, S/8, S/16, S/32, S/64.
        """
        self._check_input(x)
        return self.backbone(self._backbone_input(x))

    # ------------------------------------------------------------------ decoder
    def forward_decoder(self, feats: Tuple[Tensor, ...], b: int) -> Tensor:
        """Decoder: five feature levels of ``5B`` views -> fused map ``[B, C, S/4, S/4]``.

        MCLM localises on the deepest level; four MCRM + conv stages refine each level after adding
        the bilinearly upsampled coarser one; the quadrants are stitched and the global view added.
        """
        f0, f1, f2, f3, f4 = feats

        def refine(block: nn.Module, e: Tensor) -> Tensor:  # [5B, C, h, w] -> same, via NHWC
            t = to_nhwc(e)
            n, h, w, c = t.shape
            return from_nhwc(block(t.view(b, 5, h, w, c)).view(n, h, w, c))

        e5 = refine(self.multifieldcrossatt, self.output5(f4))
        e4 = self.output4(f3)
        e4 = self.conv4(refine(self.dec_blk4, e4.add_(_upsample(e5, e4))))
        e3 = self.output3(f2)
        e3 = self.conv3(refine(self.dec_blk3, e3.add_(_upsample(e4, e3))))
        e2 = self.output2(f1)
        e2 = self.conv2(refine(self.dec_blk2, e2.add_(_upsample(e3, e2))))
        e1 = self.output1(f0)
        e1 = self.conv1(refine(self.dec_blk1, e1.add_(_upsample(e2, e1))))

        t = to_nhwc(e1)
        n, h, w, c = t.shape
        t = t.view(b, 5, h, w, c)
        stitched = from_nhwc(stitch(t[:, :4]))  # [B, C, 2h, 2w]
        return stitched.add_(_upsample(from_nhwc(t[:, 4]), stitched))

    def forward_head(self, x: Tensor, fused: Tensor) -> Tensor:
        """Full-resolution head: ``fused [B, C, S/4, S/4]`` + input ``x`` -> logits ``[B, 1, S, S]``.

        Upstream order: insmask_head; + shallow (bilinear to S/4); nearest 2x; upsample1;
        + shallow (bilinear to S/2); nearest 2x; upsample2; output conv. ``shallow`` is a 3x3
        conv of the input; its bilinear downsamplings and the nearest-upsample + conv pairs are
        computed in closed form (see :func:`conv3x3_then_box_down`, :func:`nearest_up2_conv3x3`),
        and the last full-resolution stage runs in bands (:func:`upsample_norm_gelu_conv`).
        """
        head = self.insmask_head
        y = instance_norm_gelu_(head[0](fused))
        y = instance_norm_gelu_(head[3](y))
        y = head[6](y)
        sw, sb = self.shallow[0].weight, self.shallow[0].bias
        y = y.add_(conv3x3_then_box_down(x, sw, sb, 4))
        y = instance_norm_gelu_(nearest_up2_conv3x3(y, self.upsample1[0].weight, self.upsample1[0].bias))
        y = y.add_(conv3x3_then_box_down(x, sw, sb, 2))
        if y.requires_grad or exporting():
            # Autograd path (weights or only the input recording grad) and the export path: the banded
            # recompute below works in place, for eager inference only.
            y = instance_norm_gelu_(nearest_up2_conv3x3(y, self.upsample2[0].weight, self.upsample2[0].bias))
            return self.output(y).contiguous()
        return upsample_norm_gelu_conv(y, self.upsample2[0], self.output[0])

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``[B, 3, S, S]`` float, ImageNet-normalised (mean 0.485/0.456/0.406, std
                0.229/0.224/0.225), S a multiple of 128 (512, 768, 1024; native 1024).

        Returns:
            logits ``[B, 1, S, S]`` (same dtype as the computation), foreground where > 0.
            ``x`` is not modified.
        """
        feats = self.forward_features(x)
        fused = self.forward_decoder(feats, x.shape[0])
        del feats
        return self.forward_head(x, fused)
