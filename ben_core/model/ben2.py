"""BENBase: the BEN2 base network (Swin-B backbone + MVANet-style decoder), returning logits.

``BENBase().load_state_dict(sd, strict=True)`` accepts the 535 keys of the official BEN2 base
checkpoint (``BEN2_Base.pth['model_state_dict']`` / ``model.safetensors``).

Forward pass for an image batch ``x [B, 3, S, S]`` (ImageNet-normalised):

1. The backbone sees ``5*B`` images of side ``S/2``: the four quadrants of every image and
   the image downscaled by 2 (bilinear), grouped per image.
2. The decoder refines the five feature levels (MCLM on the deepest one, then four
   MCRM + conv stages), stitches the quadrants back and fuses the global view.
3. A head upsamples to ``S`` with a shallow full-resolution branch (a 3x3 conv of the input)
   and a final conv gives one logit per pixel (apply ``sigmoid`` for probabilities).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import MCLM, MCRM, ConvNormGELU, instance_norm_gelu_, patches_to_image, image_to_patches
from .swin import SwinTransformer

__all__ = ["BENBase"]


def _nearest_up2(x: Tensor) -> Tensor:
    """Nearest-neighbour 2x upsampling ``[N, C, H, W] -> [N, C, 2H, 2W]``."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def _resize_bilinear(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """Bilinear resize (``align_corners=False``, no antialias), identity when already ``size``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BENBase(nn.Module):
    """The BEN2 base network.

    Args:
        embed_dim: decoder width and Swin embedding width (128 for the official model).
        depths, num_heads, window_size: Swin backbone configuration (Swin-B, window 12).

    ``forward(x)``: ``x`` float ``[B, 3, S, S]`` ImageNet-normalised (S a multiple of 128; the
    model is trained at 1024), returns logits ``[B, 1, S, S]`` of ``x``'s dtype.
    """

    def __init__(self, embed_dim: int = 128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                 window_size: int = 12) -> None:
        super().__init__()
        c = embed_dim
        self.backbone = SwinTransformer(embed_dim, depths, num_heads, window_size)
        feats = self.backbone.num_features  # 128, 256, 512, 1024
        # Deep-supervision heads of training; kept for checkpoint compatibility, unused here.
        for i in range(5, 0, -1):
            self.add_module(f"sideout{i}", nn.Sequential(nn.Conv2d(c, 1, kernel_size=3, padding=1)))
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
        if not x.is_floating_point():
            raise TypeError(f"BENBase expects a float tensor (ImageNet-normalised), got {x.dtype}")
        h, w = x.shape[-2:]
        if h % 128 or w % 128 or h == 0 or w == 0:
            raise ValueError(
                f"BENBase needs a side that is a multiple of 128 (e.g. 512, 768, 1024), got {h}x{w}; "
                "resize the image first (the predictor does this)")

    @staticmethod
    def _backbone_input(x: Tensor) -> Tensor:
        """``[B, 3, S, S] -> [5B, 3, S/2, S/2]``: per image 4 quadrants (TL, TR, BL, BR) + global view."""
        b, _, h, w = x.shape
        glb = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        views = torch.cat([image_to_patches(x), glb[:, None]], dim=1)  # [B, 5, 3, S/2, S/2]
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
    def _decode(self, feats: Tuple[Tensor, ...], b: int) -> Tensor:
        """Decoder up to the stitched full map: returns ``[B, C, S/4, S/4]`` (before the head)."""
        f0, f1, f2, f3, f4 = feats

        def grouped(t: Tensor) -> Tensor:
            return t.view(b, 5, *t.shape[1:])

        def flat(t: Tensor) -> Tensor:
            return t.reshape(b * 5, *t.shape[2:])

        e5 = flat(self.multifieldcrossatt(grouped(self.output5(f4))))
        e4 = self.output4(f3)
        e4 = self.conv4(flat(self.dec_blk4(grouped(e4 + _resize_bilinear(e5, e4.shape[-2:])))))
        e3 = self.output3(f2)
        e3 = self.conv3(flat(self.dec_blk3(grouped(e3 + _resize_bilinear(e4, e3.shape[-2:])))))
        e2 = self.output2(f1)
        e2 = self.conv2(flat(self.dec_blk2(grouped(e2 + _resize_bilinear(e3, e2.shape[-2:])))))
        e1 = self.output1(f0)
        e1 = self.conv1(flat(self.dec_blk1(grouped(e1 + _resize_bilinear(e2, e1.shape[-2:])))))
        e1 = grouped(e1)
        stitched = patches_to_image(e1[:, :4])  # [B, C, S/4, S/4]
        return stitched + _resize_bilinear(e1[:, 4], stitched.shape[-2:])

    def _head(self, x: Tensor, fused: Tensor) -> Tensor:
        """Full-resolution head: ``fused [B, C, S/4, S/4]`` + input ``x`` -> logits ``[B, 1, S, S]``."""
        h = self.insmask_head
        y = instance_norm_gelu_(h[0](fused))
        y = instance_norm_gelu_(h[3](y))
        y = h[6](y)
        shallow = self.shallow(x)
        y = y + _resize_bilinear(shallow, y.shape[-2:])
        y = self.upsample1(_nearest_up2(y))
        y = _nearest_up2(y + _resize_bilinear(shallow, y.shape[-2:]))
        y = self.upsample2(y)
        return self.output(y)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``[B, 3, S, S]`` float, ImageNet-normalised (mean 0.485/0.456/0.406, std
                0.229/0.224/0.225), S a multiple of 128 (512, 768, 1024; native 1024).

        Returns:
            logits ``[B, 1, S, S]`` (same dtype as the computation), foreground where > 0.
            ``x`` is not modified.
        """
        self._check_input(x)
        b = x.shape[0]
        feats = self.backbone(self._backbone_input(x))
        fused = self._decode(feats, b)
        del feats
        return self._head(x, fused)
