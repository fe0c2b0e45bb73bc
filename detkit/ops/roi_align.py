"""RoIAlign on the CPU with Numba: torchvision.ops.roi_align's exact sampling, multi-threaded and vectorised.

Shape shorthand: B images, C channels, H/W feature-map size, L levels, T = sum of H_l*W_l over the
levels, K RoIs, S x S pooled output.

torchvision's CPU kernels loop over RoIs one thread at a time and, in the backward pass, recompute
the bilinear weights for every channel and scatter one value at a time; on the CPU they cost more
than the whole RoI head's fully connected layers in a Faster R-CNN training step. Here both passes
work on one channels-last copy of the features, so the innermost loop runs over contiguous
channels (SIMD), the sample positions and weights are computed once per RoI bin, the forward pass
is parallel over RoIs and the backward pass over channel blocks (no two threads write the same
value, so no atomics and a deterministic result). ``multilevel_roi_align`` pools every RoI from
its own FPN level in the same single pass, writing rows in the RoIs' order (torchvision's
MultiScaleRoIAlign runs one kernel per level and scatters the rows with an index_put).

Sampling follows torchvision's kernel exactly (float32 coordinates, ``aligned`` half-pixel offset,
RoIs forced to at least 1 x 1 when not aligned, sampling_ratio <= 0 meaning ceil(roi_side / S)
samples per bin side, samples outside [-1, H] x [-1, W] contributing zero, edge clamping); only the
summation order differs (results agree to float32 rounding). CUDA tensors and float64 inputs go to
torchvision's kernel (:func:`torchvision_multilevel_roi_align`: one kernel per level, one host
synchronisation for the per-level counts).
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import numba
import numpy as np
import torch
from torch import Tensor
from torchvision.ops import roi_align as tv_roi_align

__all__ = ["roi_align", "multilevel_roi_align", "torchvision_multilevel_roi_align"]

_F32 = np.float32


@numba.njit(cache=True, inline="always")
def _axis(coord, size):
    """torchvision's bilinear_interpolate along one axis: (low, high, weight_low, weight_high, valid)."""
    if coord < _F32(-1.0) or coord > _F32(size):
        return 0, 0, _F32(0.0), _F32(0.0), False
    if coord <= _F32(0.0):
        coord = _F32(0.0)
    low = int(coord)
    if low >= size - 1:
        low = size - 1
        high = low
        coord = _F32(low)
    else:
        high = low + 1
    lw = coord - _F32(low)
    return low, high, _F32(1.0) - lw, lw, True


@numba.njit(cache=True)
def _roi_geometry(roi, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned):
    """(start_h, start_w, bin_h, bin_w, grid_h, grid_w) of one RoI, in float32 as torchvision."""
    offset = _F32(0.5) if aligned else _F32(0.0)
    start_w = _F32(roi[1] * spatial_scale) - offset
    start_h = _F32(roi[2] * spatial_scale) - offset
    end_w = _F32(roi[3] * spatial_scale) - offset
    end_h = _F32(roi[4] * spatial_scale) - offset
    roi_w = end_w - start_w
    roi_h = end_h - start_h
    if not aligned:
        roi_w = max(roi_w, _F32(1.0))
        roi_h = max(roi_h, _F32(1.0))
    bin_h = roi_h / _F32(pooled_h)
    bin_w = roi_w / _F32(pooled_w)
    grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_h / _F32(pooled_h)))
    grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_w / _F32(pooled_w)))
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w


@numba.njit(cache=True)
def _bin_taps(height, width, start_h, start_w, bin_h, bin_w, grid_h, grid_w, ph, pw, pos, wts):
    """Fill pos/wts with the (pixel index, weight / count) taps of one bin; return how many."""
    count = _F32(max(grid_h * grid_w, 1))
    n = 0
    for iy in range(grid_h):
        y = start_h + _F32(ph) * bin_h + _F32(iy + 0.5) * bin_h / _F32(grid_h)
        y_lo, y_hi, wy_lo, wy_hi, y_ok = _axis(y, height)
        for ix in range(grid_w):
            x = start_w + _F32(pw) * bin_w + _F32(ix + 0.5) * bin_w / _F32(grid_w)
            x_lo, x_hi, wx_lo, wx_hi, x_ok = _axis(x, width)
            if not (y_ok and x_ok):
                continue
            pos[n] = y_lo * width + x_lo
            wts[n] = wy_lo * wx_lo / count
            pos[n + 1] = y_lo * width + x_hi
            wts[n + 1] = wy_lo * wx_hi / count
            pos[n + 2] = y_hi * width + x_lo
            wts[n + 2] = wy_hi * wx_lo / count
            pos[n + 3] = y_hi * width + x_hi
            wts[n + 3] = wy_hi * wx_hi / count
            n += 4
    return n


@numba.njit(cache=True)
def _max_taps(rois, levels, scales, pooled_h, pooled_w, sampling_ratio, aligned):
    most = 1
    for k in range(rois.shape[0]):
        g = _roi_geometry(rois[k], scales[levels[k]], pooled_h, pooled_w, sampling_ratio, aligned)
        most = max(most, 4 * g[4] * g[5])
    return most


@numba.njit(cache=True, parallel=True)
def _forward(flat, rois, levels, offsets, heights, widths, scales, pooled_h, pooled_w, sampling_ratio, aligned,
             max_taps):
    """flat: (B, T, C) every level's map channels-last, level l at rows offsets[l]:...; rois: (K, 5);
    levels: (K,) -> out (K, C, S*S), RoI k pooled from level levels[k]."""
    channels = flat.shape[2]
    num_rois = rois.shape[0]
    bins = pooled_h * pooled_w
    out = np.empty((num_rois, channels, bins), dtype=np.float32)
    for k in numba.prange(num_rois):
        b, lv = int(rois[k, 0]), levels[k]
        height, width, base = heights[lv], widths[lv], offsets[lv]
        sh, sw, bh, bw, gh, gw = _roi_geometry(rois[k], scales[lv], pooled_h, pooled_w, sampling_ratio, aligned)
        pos = np.empty(max_taps, dtype=np.int64)
        wts = np.empty(max_taps, dtype=np.float32)
        acc = np.zeros((bins, channels), dtype=np.float32)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                n = _bin_taps(height, width, sh, sw, bh, bw, gh, gw, ph, pw, pos, wts)
                row = acc[ph * pooled_w + pw]
                for t in range(n):
                    src = flat[b, base + pos[t]]
                    w = wts[t]
                    for c in range(channels):
                        row[c] += w * src[c]
        for c in range(channels):  # (S*S, C) -> (C, S*S), in cache
            for p in range(bins):
                out[k, c, p] = acc[p, c]
    return out


@numba.njit(cache=True, parallel=True)
def _backward(grad_out, rois, levels, batch, total, offsets, heights, widths, scales, pooled_h, pooled_w,
              sampling_ratio, aligned, max_taps, block):
    """grad_out: (K, C, S*S) -> grad (B, T, C); threads own disjoint channel blocks (no atomics)."""
    num_rois, channels, bins = grad_out.shape
    grad = np.zeros((batch, total, channels), dtype=np.float32)
    num_blocks = (channels + block - 1) // block
    for blk in numba.prange(num_blocks):
        c0 = blk * block
        c1 = min(channels, c0 + block)
        pos = np.empty(max_taps, dtype=np.int64)
        wts = np.empty(max_taps, dtype=np.float32)
        g = np.empty((bins, c1 - c0), dtype=np.float32)
        for k in range(num_rois):
            b, lv = int(rois[k, 0]), levels[k]
            height, width, base = heights[lv], widths[lv], offsets[lv]
            sh, sw, bh, bw, gh, gw = _roi_geometry(rois[k], scales[lv], pooled_h, pooled_w, sampling_ratio, aligned)
            for c in range(c0, c1):  # this block of (C, S*S) -> (S*S, block)
                for p in range(bins):
                    g[p, c - c0] = grad_out[k, c, p]
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    n = _bin_taps(height, width, sh, sw, bh, bw, gh, gw, ph, pw, pos, wts)
                    src = g[ph * pooled_w + pw]
                    for t in range(n):
                        dst = grad[b, base + pos[t]]
                        w = wts[t]
                        for c in range(c0, c1):
                            dst[c] += w * src[c - c0]
    return grad


def _threads() -> int:
    return max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def _run_parallel(kernel, *args):
    """Run a ``parallel=True`` kernel on torch's thread count, leaving torch's setting as it was.

    Numba's OpenMP threading layer shares libgomp with torch: its first launch sets OpenMP's thread
    count to NUMBA_NUM_THREADS (every core), which torch then reports and uses. Without the restore an
    ``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(k)`` run would silently switch to all cores after
    its first RoIAlign, oversubscribing the CPU and changing float results mid-run (and so breaking
    exact resume, which replays the same iterations in a new process).
    """
    torch_threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        return kernel(*args)
    finally:
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)


class _MultiLevelRoIAlign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rois: Tensor, levels: Tensor, output_size: Tuple[int, int], scales: Tuple[float, ...],
                sampling_ratio: int, aligned: bool, *features: Tensor) -> Tensor:
        batch, channels = features[0].shape[:2]
        sizes = [(int(f.shape[2]), int(f.shape[3])) for f in features]
        offsets = np.cumsum([0] + [h * w for h, w in sizes]).astype(np.int64)
        # every level, (B, C, H_l, W_l) -> (B, H_l, W_l, C), copied once into one (B, T, C) buffer
        flat = torch.empty((batch, int(offsets[-1]), channels), dtype=torch.float32)
        for f, (h, w), off in zip(features, sizes, offsets):
            flat[:, off:off + h * w].view(batch, h, w, channels).copy_(f.detach().permute(0, 2, 3, 1))
        geometry = (offsets, np.array([h for h, _ in sizes], dtype=np.int64),
                    np.array([w for _, w in sizes], dtype=np.int64), np.array(scales, dtype=np.float32),
                    int(output_size[0]), int(output_size[1]), int(sampling_ratio), bool(aligned))
        rois_np = rois.detach().contiguous().numpy()
        levels_np = levels.detach().to(torch.int64).contiguous().numpy()
        max_taps = _max_taps(rois_np, levels_np, *geometry[3:]) if rois_np.shape[0] else 1
        out = _run_parallel(_forward, flat.numpy(), rois_np, levels_np, *geometry, max_taps)
        ctx.save_for_backward(rois, levels)
        ctx.meta = (batch, channels, sizes, geometry, max_taps, [f.dtype for f in features])
        # (K, C, S*S) -> (K, C, S_h, S_w)
        return torch.from_numpy(out).view(out.shape[0], channels, int(output_size[0]), int(output_size[1]))

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        rois, levels = ctx.saved_tensors
        batch, channels, sizes, geometry, max_taps, dtypes = ctx.meta
        offsets = geometry[0]
        # (K, C, S_h, S_w) -> (K, C, S_h*S_w)
        g = grad_output.float().contiguous().view(grad_output.shape[0], channels, geometry[4] * geometry[5])
        block = max(8, -(-channels // _threads()))  # channels per thread-owned block
        grad = _run_parallel(_backward, g.numpy(), rois.contiguous().numpy(),
                             levels.to(torch.int64).contiguous().numpy(), batch, int(offsets[-1]), *geometry,
                             max_taps, block)
        grad = torch.from_numpy(grad)
        # (B, T, C) -> per level (B, H_l*W_l, C) -> (B, H_l, W_l, C) -> (B, C, H_l, W_l) view
        # (a channels_last tensor: the layout the convolutions of a channels_last model produce and take)
        grads = [grad[:, off:off + h * w].view(batch, h, w, channels).permute(0, 3, 1, 2).to(dtype)
                 for (h, w), off, dtype in zip(sizes, offsets, dtypes)]
        return (None, None, None, None, None, None, *grads)


def _output_size(output_size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(output_size, int):
        return (output_size, output_size)
    return (int(output_size[0]), int(output_size[1]))


def _check(features: Sequence[Tensor], rois: Tensor) -> None:
    if any(f.dim() != 4 for f in features) or rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align expects features (B, C, H, W) and rois (K, 5), got "
                         f"{[tuple(f.shape) for f in features]} and {tuple(rois.shape)}")


# Reduced-precision maps (bf16 / fp16 autocast) are pooled in float32 too: the kernel copies every map
# into one float32 channels-last buffer anyway, so accepting them costs nothing and keeps the sampling
# exact; the output is float32 (the next Linear under autocast casts it back down).
_NUMBA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _use_numba(features: Sequence[Tensor], rois: Tensor) -> bool:
    return (all(f.device.type == "cpu" and f.dtype in _NUMBA_DTYPES for f in features)
            and rois.dtype == torch.float32)


def roi_align(features: Tensor, rois: Tensor, output_size: Union[int, Sequence[int]], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """torchvision.ops.roi_align's signature and result (rois as a Tensor[K, 5] (batch index, x1, y1, x2, y2)).

    Args:
        features: Tensor[B, C, H, W]; rois: Tensor[K, 5]; output_size: S or (S_h, S_w);
        spatial_scale: feature pixels per input pixel (1 / stride); sampling_ratio: samples per bin side
        (<= 0: adaptive); aligned: shift by -0.5 pixel (Detectron2's ROIAlignV2).
    Returns:
        Tensor[K, C, S_h, S_w], differentiable with respect to `features`.
    """
    output_size = _output_size(output_size)
    _check([features], rois)
    if not _use_numba([features], rois):
        return tv_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)
    levels = torch.zeros(rois.shape[0], dtype=torch.int64)
    return _MultiLevelRoIAlign.apply(rois, levels, output_size, (float(spatial_scale),), int(sampling_ratio),
                                     bool(aligned), features)


def multilevel_roi_align(features: Sequence[Tensor], rois: Tensor, levels: Tensor,
                         output_size: Union[int, Sequence[int]], spatial_scales: Sequence[float],
                         sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """RoIAlign of each RoI on its own feature level, in one pass (no per-level gather and scatter).

    Equals ``out[levels == l] = roi_align(features[l], rois[levels == l], ..., spatial_scales[l], ...)``
    for every level l, which is what torchvision's MultiScaleRoIAlign computes.

    Args:
        features: L x Tensor[B, C, H_l, W_l]; rois: Tensor[K, 5]; levels: int64[K] in [0, L);
        output_size: S or (S_h, S_w); spatial_scales: L floats (1 / stride of each level).
    Returns:
        Tensor[K, C, S_h, S_w], differentiable with respect to every feature map.
    """
    output_size = _output_size(output_size)
    _check(features, rois)
    if len(spatial_scales) != len(features):
        raise ValueError(f"{len(features)} feature maps but {len(spatial_scales)} spatial scales")
    if not _use_numba(features, rois):
        return torchvision_multilevel_roi_align(features, rois, levels, output_size, spatial_scales,
                                                sampling_ratio, aligned)
    return _MultiLevelRoIAlign.apply(rois, levels, output_size, tuple(float(s) for s in spatial_scales),
                                     int(sampling_ratio), bool(aligned), *features)


def torchvision_multilevel_roi_align(features: Sequence[Tensor], rois: Tensor, levels: Tensor,
                                     output_size: Union[int, Sequence[int]], spatial_scales: Sequence[float],
                                     sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """:func:`multilevel_roi_align` with torchvision's kernel per level, on any device (the CUDA path).

    The RoIs are grouped by level with a stable sort, each group is pooled from its level, and the rows
    are put back in the RoIs' order by a gather (differentiable, no index_put of a mask). The one host
    synchronisation is the read of the per-level counts (torchvision's MultiScaleRoIAlign has one
    ``torch.where`` per level).

    Args / Returns: as :func:`multilevel_roi_align` (levels: int64[K] in [0, L)).
    """
    output_size = _output_size(output_size)
    channels = features[0].shape[1]
    if rois.shape[0] == 0:
        return features[0].new_zeros((0, channels) + output_size)
    levels = levels.to(torch.int64)
    counts = torch.bincount(levels, minlength=len(features)).tolist()  # the host synchronisation
    order = torch.argsort(levels, stable=True)
    groups = rois[order].split(counts)  # (K, 5) -> L x (K_l, 5), level by level
    pooled = [tv_roi_align(f, r, output_size, s, sampling_ratio, aligned)
              for f, r, s, n in zip(features, groups, spatial_scales, counts) if n > 0]
    out = torch.cat([p.to(pooled[0].dtype) for p in pooled])  # (K, C, S_h, S_w) in level order
    return out.index_select(0, torch.argsort(order))  # back to the RoIs' order
