"""The one cut-out pipeline behind every door (CLI, video, Remove Background, Refine Mask):

    image -> alpha (BEN2, or a mask given by the caller) -> optional refinement on the unknown band
          -> foreground colours -> composite (RGBA cut-out or RGB over a colour)

Work is done chunk by chunk on one device (the network sees a chunk at once), then image by image:
after the alpha, the full-resolution steps (colours as float RGB, foreground colours, composite,
conversion to the output dtype) run in horizontal strips of about ``foreground.STRIP_PIXELS`` pixels,
and each strip's result goes straight into the output tensors on ``out_device`` (optionally already
quantised to uint8). So a large photo never exists as full-size float copies beyond its alpha and the
output itself; the strips give bit-identical results (``ben_core.matting.foreground.estimate_foreground_strips``).
:meth:`CutoutPipeline.run` processes a whole batch, :meth:`CutoutPipeline.stream` a stream of chunks
(video frames), one chunk in, one :class:`Cutout` out.

One policy at every door:
* colours are float 0..1 (uint8 only when a writer asks for it, at the very end);
* foreground colours: blur fusion (``ben_core.matting.foreground``, upstream BEN2's ``refine_foreground``) over
  the whole image. Where alpha is 1 that is the image itself; where alpha is 0 it extends the subject's
  colours, so a straight-alpha RGBA cut-out has no old-background colour to bleed in when resampled.
  Switched off, the image's own colours are used everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

import torch

from .callbacks import Progress, ShouldStop, check_stop, report, stop_scope
from .io.batches import Chunk, ImageBatch
from .io.inputs import to_float_rgb
from .matting.compose import composite, to_uint8
from .matting.foreground import default_strip_rows, estimate_foreground_strips
from .matting.refine import check_working_size, refine_alpha
from .matting.trimap import make_trimap

__all__ = ["Refinement", "CutoutOptions", "Cutout", "CutoutPipeline"]

Maps = Union[torch.Tensor, List[torch.Tensor]]


@dataclass(frozen=True)
class Refinement:
    """Alpha refinement inside the unknown band of a trimap (:func:`ben_core.matting.refine.refine_alpha`).

    ``method``: ``"guided"`` or ``"vitmatte"``; ``trimap_source`` / ``band_radius``: how the trimap is made
    when the caller gives none (:func:`ben_core.matting.trimap.make_trimap`; None = the default radius);
    ``radius`` / ``eps``: guided-filter settings (None = defaults); ``working_size``: side of the square map
    the masks *given to the pipeline* were predicted at, when the caller knows it (e.g. 1024 for BEN2 masks
    made at its native size; None = measured on each mask, :func:`ben_core.matting.refine.fit_scale`). An alpha the
    pipeline predicts itself is always refined with its predictor's working size. Not used by vitmatte.
    ``vitmatte``: a loaded ``VitMatteForImageMatting`` (None = :func:`ben_core.matting.vitmatte.load_vitmatte` on
    first use).
    """

    method: str = "guided"
    trimap_source: str = "auto"
    band_radius: Optional[int] = None
    radius: Optional[int] = None
    eps: Optional[float] = None
    vitmatte: Any = field(default=None, compare=False)
    working_size: Optional[int] = None

    def __post_init__(self):
        if self.working_size is not None:
            check_working_size(self.working_size)


@dataclass(frozen=True)
class CutoutOptions:
    """What the pipeline makes.

    ``foreground``: estimate foreground colours (blur fusion) instead of using the image's colours.
    ``background``: None -> RGBA cut-out; ``(r, g, b)`` floats 0..1 -> RGB composited over that colour.
    ``refine``: a :class:`Refinement`, or None to use the alpha as it comes.
    ``image``: make the composite at all (False: alpha only, e.g. for a matte file).
    """

    foreground: bool = True
    background: Optional[Tuple[float, float, float]] = None
    refine: Optional[Refinement] = None
    image: bool = True


@dataclass
class Cutout:
    """Results of a chunk or a batch, in the input's order.

    ``alpha``: ``[n, H, W]`` 0..1, 1 = foreground; ``image``: ``[n, H, W, 4]`` (RGBA) or ``[n, H, W, 3]``
    (RGB over the background), channels last, or None when not asked for. Float32 0..1, or uint8 when
    asked for. Lists of per-image tensors instead of stacked ones when the image sizes differ.
    """

    alpha: Maps
    image: Optional[Maps]

    def __len__(self) -> int:
        return len(self.alpha)


class CutoutPipeline:
    """Cut out images with BEN2 (or a given alpha), chunk by chunk on one device.

    Args:
        predictor: a :class:`ben_core.predictor.BENPredictor` (anything with ``device``, ``batch_size``
            and its ``predict_chunk(chunk, deferred=True)``), or None when every call gives the alpha
            (mask refinement only).
        options: :class:`CutoutOptions`.
        device: where the work runs; default the predictor's device (the CPU without a predictor).
    """

    def __init__(self, predictor=None, options: CutoutOptions = CutoutOptions(), device=None):
        if not isinstance(options, CutoutOptions):
            raise TypeError(f"options must be a CutoutOptions, got {type(options).__name__}")
        if options.background is not None:
            vals = tuple(options.background)
            if len(vals) != 3 or not all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in vals):
                raise ValueError(f"background must be None or three floats in 0..1 (see compose.parse_colour), "
                                 f"got {options.background!r}")
        self.predictor = predictor
        self.options = options
        self._vitmatte = None
        if device is None:
            device = predictor.device if predictor is not None else "cpu"
        self.device = torch.device(device)

    # -- one chunk, on the device ----------------------------------------------------------------

    def process(self, chunk: Chunk, alpha: Optional[Maps] = None, trimap: Optional[Maps] = None,
                should_stop: ShouldStop = None) -> Cutout:
        """Cut out one chunk already on the pipeline's device.

        ``chunk``: validated images, channels last (``ben_core.io.batches.ImageBatch.chunk``): ``[n, H, W, C]``
        or a list of ``[H_i, W_i, C]``. ``alpha``: one ``[H, W]`` map 0..1 per image (stacked or a list),
        or None to predict it (one network batch, before the images are converted to float RGB for
        the steps after it). ``trimap``: maps {0, 0.5, 1} for the refinement, or None to make them
        (``options.refine.trimap_source``). ``should_stop`` is checked before every image (and between
        the strips of a large one). Returns a float32 :class:`Cutout` on the device, stacked when the
        images share one size.
        """
        out = _Outputs([tuple(im.shape[:2]) for im in chunk], self.options, self.device, torch.float32)
        self._cut_chunk(chunk, alpha, trimap, should_stop, out, 0)
        return out.result()

    def _predict(self, chunk: Chunk, should_stop: ShouldStop, deferred: bool = False):
        """The predictor's ``predict_chunk``, with ``should_stop`` made current: the predictor checks it inside
        a long forward too (:func:`ben_core.callbacks.stop_scope`)."""
        if self.predictor is None:
            raise ValueError("this pipeline has no predictor: pass the alpha (or build it with a BENPredictor)")
        with stop_scope(should_stop):
            return self.predictor.predict_chunk(chunk, deferred=deferred)

    def _cut_chunk(self, chunk: Chunk, alpha: Optional[Maps], trimap: Optional[Maps], should_stop: ShouldStop,
                   out: "_Outputs", start: int, predicted: bool = False) -> None:
        """Cut out one chunk into ``out``, its images at ``start ..`` (see :meth:`process`). ``predicted``:
        the given ``alpha`` came from this pipeline's predictor (steadied video frames, a redone chunk)."""
        check = None
        if alpha is None:
            alpha, check = self._predict(chunk, should_stop, deferred=True)
            predicted = True
        n = len(chunk)
        for i in range(n):
            check_stop(should_stop, i, n)
            self._cut_image(chunk[i], alpha[i], None if trimap is None else trimap[i], should_stop, out, start + i,
                            predicted)
        # the network's verdict, read once all of the chunk's work is queued: a half-precision chunk that
        # came out non-finite is redone with its fp32 alpha (its outputs are overwritten)
        redo = check() if check is not None else None
        if redo is not None:
            self._cut_chunk(chunk, redo, trimap, should_stop, out, start, predicted=True)

    def _cut_image(self, raw: torch.Tensor, a: torch.Tensor, trimap: Optional[torch.Tensor], should_stop: ShouldStop,
                   out: "_Outputs", index: int, predicted: bool) -> None:
        """One image ``raw`` (``[H, W, C]`` as validated) with its alpha ``a`` (``[H, W]`` float 0..1): the
        (refined) alpha and the composite, written into ``out`` as image ``index``, strip by strip.
        ``predicted``: ``a`` came from this pipeline's predictor."""
        x = None
        if self.options.refine is not None:  # the refinement needs the whole image as float RGB
            x = to_float_rgb(raw[None])[0]
            a = self._refine(x, a, trimap, should_stop, predicted)
        out.put_alpha(index, a)
        if not self.options.image:
            return
        for r0, r1, rgb in self._colour_strips(raw, x, a, should_stop):
            out.put_rows(index, r0, r1, composite(rgb.permute(1, 2, 0), a[r0:r1], self.options.background))

    def _colour_strips(self, raw: torch.Tensor, x: Optional[torch.Tensor], a: torch.Tensor,
                       should_stop: ShouldStop) -> Iterator[Tuple[int, int, torch.Tensor]]:
        """The colours to composite, ``(r0, r1, [3, r1 - r0, W] float32 0..1)`` strip by strip: foreground
        colours (blur fusion) or the image's own. Rows come from ``x`` (float RGB ``[3, H, W]``) when it
        exists, else are converted from ``raw`` strip by strip."""
        if x is not None:
            def rows(lo: int, hi: int) -> torch.Tensor:
                return x[:, lo:hi]
        else:
            def rows(lo: int, hi: int) -> torch.Tensor:
                return to_float_rgb(raw[None, lo:hi])[0]
        h, w = a.shape
        step = default_strip_rows(w)
        if self.options.foreground:  # inputs are finite and in 0..1 by construction: no host check
            yield from estimate_foreground_strips(rows, a, strip_rows=step, should_stop=should_stop)
            return
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            yield r0, r1, rows(r0, r1)

    def _refine(self, x: torch.Tensor, a: torch.Tensor, trimap: Optional[torch.Tensor],
                should_stop: ShouldStop, predicted: bool) -> torch.Tensor:
        r = self.options.refine
        a = a.to(torch.float32)[None]
        t = make_trimap(a, r.trimap_source, r.band_radius) if trimap is None else trimap.to(a)[None]
        if r.method == "vitmatte":
            if self._vitmatte is None:  # loaded once per pipeline, on first use
                from .matting.vitmatte import load_vitmatte
                self._vitmatte = r.vitmatte if r.vitmatte is not None else load_vitmatte(device=self.device)
            return refine_alpha(x[None], a, t, method="vitmatte", model=self._vitmatte, should_stop=should_stop)[0]
        # the map the alpha was predicted at sets the fit's scale: the predictor's for its own alpha, the
        # caller's word for a given one, else refine_alpha measures it on the mask
        working_size = getattr(self.predictor, "working_size", None) if predicted else r.working_size
        return refine_alpha(x[None], a, t, method=r.method, radius=r.radius, eps=r.eps, working_size=working_size,
                            should_stop=should_stop)[0]

    # -- batches and streams ---------------------------------------------------------------------

    def steady_alpha(self, images, stabilizer, alpha: Optional[Maps] = None, *, batch_size: Optional[int] = None,
                     progress: Progress = None, should_stop: ShouldStop = None, end_of_clip: bool = True,
                     out_device=None) -> torch.Tensor:
        """The alpha of video frames in order, steadied from frame to frame by ``stabilizer`` (a
        :class:`ben_core.matting.temporal.AlphaStabilizer`, whose state carries on to the next call).

        ``images``: frames of one size (anything :meth:`run` takes); ``alpha``: their ``[T, H, W]`` maps, or
        None to predict them (``batch_size`` frames per network batch). Returns ``[m, H, W]`` float32 0..1
        on ``out_device`` (default the pipeline's device), the steadied alpha of the next ``m`` frames
        through the stabiliser, oldest first: ``m == T`` for a causal stabiliser; a bidirectional one
        holds frames back until it has seen enough of their future, and ``end_of_clip=True`` returns the
        frames it still holds as the clip's last. ``progress(done, total)`` after every network batch,
        ``should_stop()`` before each. The inputs are not modified.
        """
        batch = ImageBatch(images)
        if len(set(batch.sizes)) > 1:
            raise ValueError("temporal stabilisation needs video frames of one size; these images differ in size")
        if alpha is not None:
            _check_maps("alpha", alpha, batch.sizes)
        batch_size = self._batch_size(batch_size)
        device = self.device if out_device is None else torch.device(out_device)
        total, parts = len(batch), []
        for start, end, chunk in batch.chunks(batch_size, self.device):
            check_stop(should_stop, start, total)
            a = _slice(alpha, start, end, self.device)
            if a is None:
                a = self._predict(chunk, should_stop)
            parts.append(stabilizer.update(to_float_rgb(_stacked(chunk)), _stacked(a)).to(device))
            report(progress, end, total)
        if end_of_clip:
            parts.append(stabilizer.flush().to(device))
        return torch.cat(parts)

    def _batch_size(self, batch_size: Optional[int]) -> int:
        if batch_size is None:
            batch_size = getattr(self.predictor, "batch_size", 1)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        return batch_size

    def run(self, images, alpha: Optional[Maps] = None, trimap: Optional[Maps] = None, *,
            batch_size: Optional[int] = None, progress: Progress = None, should_stop: ShouldStop = None,
            out_device="cpu", out_dtype: torch.dtype = torch.float32, stabilizer=None) -> Cutout:
        """Cut out a batch of images, ``batch_size`` at a time.

        ``images``: anything :class:`ben_core.io.batches.ImageBatch` accepts (``[B, H, W, C]`` uint8/float,
        PIL images, lists of mixed sizes...). ``alpha`` / ``trimap``: ``[B, H, W]`` maps (or lists) for
        the images, or None (see :meth:`process`). ``batch_size``: images per chunk (default: the
        predictor's, else 1). ``progress(done, total)`` after every chunk, ``should_stop()`` before every
        chunk and image (see :mod:`ben_core.callbacks`). Outputs go to ``out_device`` as ``out_dtype``
        (float32 0..1, or uint8 quantised on the device). ``stabilizer``: an
        :class:`ben_core.matting.temporal.AlphaStabilizer` for video frames in order (all of one size): the alpha
        of the whole batch is steadied first (:meth:`steady_alpha`; the batch ends the clip for a
        bidirectional one, a causal one's state carries on to the next call), then the refinement and
        colours run on it. The inputs are not modified.
        """
        if out_dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"out_dtype must be torch.float32 or torch.uint8, got {out_dtype!r}")
        batch = ImageBatch(images)
        total = len(batch)
        for name, maps in (("alpha", alpha), ("trimap", trimap)):
            if maps is not None:
                _check_maps(name, maps, batch.sizes)
        batch_size = self._batch_size(batch_size)
        predicted = False
        if stabilizer is not None:  # the network's pass (with the progress), then the colours on the steady alpha
            held = stabilizer.held
            predicted = alpha is None
            alpha = self.steady_alpha(images, stabilizer, alpha, batch_size=batch_size, progress=progress,
                                      should_stop=should_stop, out_device=out_device)
            if held or len(alpha) != total:
                raise ValueError("this stabiliser held frames of an earlier call; flush() it at the end of each clip")
            progress = None
        out = _Outputs(batch.sizes, self.options, torch.device(out_device), out_dtype)
        for start, end, chunk in batch.chunks(batch_size, self.device):
            check_stop(should_stop, start, total)
            self._cut_chunk(chunk, _slice(alpha, start, end, self.device), _slice(trimap, start, end, self.device),
                            should_stop, out, start, predicted)
            report(progress, end, total)
        return out.result()

    def stream(self, chunks: Iterable, *, batch_size: Optional[int] = None, should_stop: ShouldStop = None,
               out_device="cpu", out_dtype: torch.dtype = torch.float32, stabilizer=None) -> Iterator[Cutout]:
        """Chunks in, cut-outs out: each chunk (anything :meth:`run` takes, e.g. ``[n, H, W, 3]`` uint8
        video frames) is cut out (``batch_size`` images per network batch, default the predictor's) and
        its :class:`Cutout` yielded before the next chunk is read, so memory holds one chunk whatever
        the length of the stream. ``stabilizer`` as in :meth:`run` (causal only: a bidirectional one holds
        frames back, see :func:`ben_core.video.remove_background_video`), carried across the chunks."""
        if stabilizer is not None and stabilizer.delay:
            raise ValueError("stream() gives each chunk's cut-out at once, so it takes a causal stabiliser only; a "
                             "bidirectional one needs the whole clip: pipeline.run(clip, stabilizer=...) or "
                             "ben_core.video.remove_background_video(..., temporal='bidirectional')")
        for chunk in chunks:
            yield self.run(chunk, batch_size=batch_size, should_stop=should_stop, out_device=out_device,
                           out_dtype=out_dtype, stabilizer=stabilizer)


def _stacked(maps: Union[Chunk, Maps]) -> torch.Tensor:
    return maps if isinstance(maps, torch.Tensor) else torch.stack(list(maps))


def _check_maps(name: str, maps: Maps, sizes: list) -> None:
    """One float ``[H, W]`` map in 0..1 per image, of the image's size (else a ValueError/TypeError naming it)."""
    got = [tuple(m.shape) for m in maps]
    if got != [tuple(s) for s in sizes]:
        raise ValueError(f"{name} must hold one [H, W] map per image with the image sizes {sizes[:4]}"
                         f"{'...' if len(sizes) > 4 else ''}, got {len(got)} maps of sizes {got[:4]}")
    for i, m in enumerate(maps):
        if not m.is_floating_point():
            raise TypeError(f"{name}[{i}] must be a float map in 0..1, got {m.dtype}")
        lo, hi = torch.aminmax(m)
        if not (float(lo) >= 0.0 and float(hi) <= 1.0):  # also false for NaN
            raise ValueError(f"{name}[{i}] must lie in 0..1 (1 = foreground), got values in [{float(lo):.3g}, "
                             f"{float(hi):.3g}]; pass probabilities, not logits or 0..255 values")


def _slice(maps: Optional[Maps], start: int, end: int, device: torch.device) -> Optional[Maps]:
    if maps is None:
        return None
    part = maps[start:end]
    if isinstance(part, torch.Tensor):
        return part.to(device)
    return [m.to(device) for m in part]


class _Outputs:
    """The results, on the output device in the output dtype, written image by image and strip by strip.

    Stacked when the images share one size (allocated at the first write, so not during the first
    chunk's network pass; no second copy of a long batch), lists otherwise. A stacked RGBA cut-out holds
    the alpha as its 4th channel, so the alpha is stored once and split off at the end, when no network
    runs any more.
    """

    def __init__(self, sizes: list, options: CutoutOptions, device: torch.device, dtype: torch.dtype):
        self.sizes = [tuple(s) for s in sizes]
        self.n = len(self.sizes)
        self.device, self.dtype = device, dtype
        self.uniform = len(set(self.sizes)) == 1
        self.channels = 4 if options.background is None else 3
        self.alpha_in_image = self.uniform and options.image and options.background is None
        self.alpha: Optional[Maps] = None if self.uniform else [None] * self.n
        self.image: Optional[Maps] = None if self.uniform or not options.image else [None] * self.n

    def _convert(self, x: torch.Tensor) -> torch.Tensor:
        return (to_uint8(x) if self.dtype == torch.uint8 else x.to(self.dtype)).to(self.device)

    def _slot(self, maps: Optional[Maps], i: int, channels: Tuple[int, ...]) -> Tuple[Maps, torch.Tensor]:
        """``(maps, image i's tensor in it)``, allocating the stack or image i's own tensor on first use."""
        if self.uniform:
            if maps is None:
                maps = torch.empty((self.n, *self.sizes[0], *channels), dtype=self.dtype, device=self.device)
            return maps, maps[i]
        if maps[i] is None:
            maps[i] = torch.empty((*self.sizes[i], *channels), dtype=self.dtype, device=self.device)
        return maps, maps[i]

    def put_rows(self, i: int, r0: int, r1: int, rows: torch.Tensor) -> None:
        """Rows ``[r0, r1)`` of image ``i``'s composite: ``[r1 - r0, W, C]`` float 0..1, on any device."""
        self.image, dst = self._slot(self.image, i, (self.channels,))
        dst[r0:r1] = self._convert(rows)

    def put_alpha(self, i: int, a: torch.Tensor) -> None:
        """Image ``i``'s alpha ``[H, W]`` float 0..1 (converted a strip at a time: no full-size temporaries)."""
        if self.alpha_in_image:  # composite() stores it, clamped to 0..1 as it is, as channel 3
            return
        self.alpha, dst = self._slot(self.alpha, i, ())
        step = default_strip_rows(a.shape[1])
        for r0 in range(0, a.shape[0], step):
            dst[r0:r0 + step] = self._convert(a[r0:r0 + step])

    def result(self) -> Cutout:
        if self.alpha_in_image:
            return Cutout(self.image[..., 3].contiguous(), self.image)
        return Cutout(self.alpha, self.image)
