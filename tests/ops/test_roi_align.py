"""detkit.ops.roi_align against torchvision.ops.roi_align: forward values and gradients."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from detkit.ops.roi_align import roi_align
from detkit.testing import random_boxes


def make_rois(seed, k, batch, height, width, scale, max_side=80.0):
    """k RoIs (image index, x1, y1, x2, y2) in input pixels for a height x width map at `scale`, some
    reaching outside the map, some tiny or degenerate. Returns Tensor[k, 5]."""
    g = np.random.default_rng(seed)
    canvas = (width / scale * 1.1, height / scale * 1.1)   # 10 % wider and taller than the map, plus margin
    tiny = random_boxes(k // 10, g, canvas, (0.0, max_side * 0.01), margin=8.0)  # sub-pixel RoIs
    boxes = torch.cat((tiny, random_boxes(k - k // 10, g, canvas, (0.0, max_side), margin=8.0)))
    if k > 3:
        boxes[1] = boxes[1, [2, 3, 0, 1]]  # inverted
        boxes[2] = torch.tensor([-50.0, -50.0, -20.0, -20.0])  # entirely outside
    ids = torch.from_numpy(g.integers(0, batch, (k, 1))).float()
    return torch.cat((ids, boxes), dim=1)


@pytest.mark.parametrize("sampling_ratio", [2, 1, 0, -1])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_torchvision(sampling_ratio, aligned, seed):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 12, 19, 23, generator=gen, requires_grad=True)
    rois = make_rois(seed, 150, 2, 19, 23, 0.25)
    ours = roi_align(feats, rois, 7, 0.25, sampling_ratio, aligned)
    theirs = tv_roi_align(feats, rois, (7, 7), 0.25, sampling_ratio, aligned)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn(ours.shape, generator=gen)
    g_ours, = torch.autograd.grad(ours, feats, grad)
    g_theirs, = torch.autograd.grad(theirs, feats, grad)
    torch.testing.assert_close(g_ours, g_theirs)


def test_rectangular_output_and_scale_one():
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(1, 4, 30, 40, generator=gen)
    rois = make_rois(5, 20, 1, 30, 40, 1.0, max_side=20)
    torch.testing.assert_close(roi_align(feats, rois, (3, 5), 1.0, 2), tv_roi_align(feats, rois, (3, 5), 1.0, 2))


def test_channels_last_input_and_inference_mode():
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 16, 20, 20, generator=gen)
    rois = make_rois(2, 30, 2, 20, 20, 0.5)
    expected = tv_roi_align(feats, rois, 7, 0.5, 2)
    with torch.inference_mode():
        out = roi_align(feats.to(memory_format=torch.channels_last), rois, 7, 0.5, 2)
    torch.testing.assert_close(out, expected)


def test_empty_rois():
    feats = torch.randn(1, 3, 8, 8, requires_grad=True)
    out = roi_align(feats, torch.zeros(0, 5), 7, 1.0, 2)
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert torch.all(feats.grad == 0)


def test_float64_falls_back_to_torchvision():
    feats = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    rois = torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(roi_align(feats, rois, 2, 1.0, 2), tv_roi_align(feats, rois, 2, 1.0, 2))


def test_bad_shapes():
    with pytest.raises(ValueError, match="rois"):
        roi_align(torch.randn(1, 3, 8, 8), torch.zeros(4, 4), 7)


@pytest.mark.parametrize("aligned", [False, True])
def test_multilevel_matches_per_level_torchvision(aligned):
    from detkit.ops.roi_align import multilevel_roi_align

    gen = torch.Generator().manual_seed(7)
    feats = [torch.randn(2, 6, 32 >> level, 40 >> level, generator=gen, requires_grad=True) for level in range(3)]
    scales = [0.25, 0.125, 0.0625]
    rois = make_rois(7, 90, 2, 32, 40, 0.25)
    levels = torch.randint(0, 3, (90,), generator=gen)
    ours = multilevel_roi_align(feats, rois, levels, 7, scales, 2, aligned)
    theirs = torch.zeros_like(ours)
    for level, (f, s) in enumerate(zip(feats, scales)):
        idx = torch.where(levels == level)[0]
        theirs[idx] = tv_roi_align(f, rois[idx], (7, 7), s, 2, aligned)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn(ours.shape, generator=gen)
    for a, b in zip(torch.autograd.grad(ours, feats, grad), torch.autograd.grad(theirs, feats, grad)):
        torch.testing.assert_close(a, b)


def test_leaves_torch_thread_count_alone():
    # Numba's OpenMP layer would otherwise raise OpenMP's thread count (which torch uses) to every core
    # on its first launch. A fresh process, so that the layer really starts here.
    code = ("import torch\n"
            "from detkit.ops.roi_align import roi_align\n"
            "torch.set_num_threads(1)\n"
            "x = torch.rand(1, 16, 12, 12, requires_grad=True)\n"
            "rois = torch.tensor([[0.0, 1.0, 1.0, 9.0, 8.0], [0.0, 0.0, 2.0, 5.0, 11.0]])\n"
            "roi_align(x, rois, 3, 1.0, 2).sum().backward()\n"
            "print(torch.get_num_threads())\n")
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "1"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_reduced_precision_maps_pool_in_float32(dtype, channels_last):
    """bf16 / fp16 maps (autocast) are pooled exactly as their float32 values, and get gradients of their dtype."""
    from detkit.ops.roi_align import multilevel_roi_align

    g = torch.Generator().manual_seed(0)
    maps32 = [torch.randn(2, 16, 24, 32, generator=g), torch.randn(2, 16, 12, 16, generator=g)]
    maps = [m.to(dtype) for m in maps32]
    if channels_last:
        maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
    rois = make_rois(1, 40, 2, 24, 32, 0.25)
    levels = torch.from_numpy(np.random.default_rng(2).integers(0, 2, 40))
    for m in maps:
        m.requires_grad_(True)
    out = multilevel_roi_align(maps, rois, levels, 7, [0.25, 0.125], 2)
    assert out.dtype == torch.float32
    exact = [m.detach().float().requires_grad_(True) for m in maps]  # the same values in float32
    expected = multilevel_roi_align(exact, rois, levels, 7, [0.25, 0.125], 2)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    grad = torch.randn(out.shape, generator=g)
    out.backward(grad)
    expected.backward(grad)
    for m, e in zip(maps, exact):
        assert m.grad.dtype == dtype
        torch.testing.assert_close(m.grad, e.grad.to(dtype), rtol=0, atol=0)


@pytest.mark.parametrize("aligned", [False, True])
def test_torchvision_multilevel_path_equals_numba_values_and_gradients(aligned):
    """The CUDA path (torchvision's kernel per level), run here on the CPU against the Numba pass."""
    from detkit.ops.roi_align import multilevel_roi_align, torchvision_multilevel_roi_align

    gen = torch.Generator().manual_seed(5)
    sizes, scales = [(40, 48), (20, 24), (10, 12), (5, 6)], [0.25, 0.125, 0.0625, 0.03125]
    feats = [torch.randn(2, 8, h, w, generator=gen, requires_grad=True) for h, w in sizes]
    rois = make_rois(5, 300, 2, 160, 192, 1.0, max_side=150.0)
    levels = torch.from_numpy(np.random.default_rng(5).integers(0, 4, 300))
    levels[:40] = 2  # one level crowded, keep the others in any order
    levels[levels == 1] = 3  # and one level empty
    ours = torchvision_multilevel_roi_align(feats, rois, levels, 7, scales, 2, aligned)
    numba = multilevel_roi_align(feats, rois, levels, 7, scales, 2, aligned)
    torch.testing.assert_close(ours, numba)
    grad = torch.randn(ours.shape, generator=gen)
    got = torch.autograd.grad(ours, feats, grad, allow_unused=True)
    want = torch.autograd.grad(numba, feats, grad)
    assert got[1] is None and float(want[1].abs().sum()) == 0.0  # the empty level is not pooled from
    for g_ours, g_numba in zip(got[:1] + got[2:], want[:1] + want[2:]):
        torch.testing.assert_close(g_ours, g_numba)
    empty = torchvision_multilevel_roi_align(feats, rois[:0], levels[:0], 7, scales, 2, aligned)
    assert empty.shape == (0, 8, 7, 7)
