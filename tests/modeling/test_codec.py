"""detkit.modeling.codec.BoxCoder against torchvision's BoxCoder (the oracle)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TorchvisionBoxCoder

from detkit.modeling.codec import BoxCoder
from detkit.testing import random_boxes


def boxes_and_anchors(n, seed, dtype=torch.float32, scale=1.0):
    """Two independent sets of n boxes (sides 4..300 on a 1100 x 1100 canvas, times scale): (gt, anchors)."""
    g = np.random.default_rng(seed)
    gt, anchors = (random_boxes(n, g, 1100.0, (4.0, 300.0), dtype=torch.float64) * scale for _ in range(2))
    return gt.to(dtype), anchors.to(dtype)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 7.0)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_encode_decode_match_torchvision(weights, dtype):
    gt, anchors = boxes_and_anchors(500, 0, dtype)
    ours, theirs = BoxCoder(weights=weights), TorchvisionBoxCoder(weights)
    torch.testing.assert_close(ours.encode(gt, anchors), theirs.encode_single(gt, anchors), rtol=0, atol=0)
    deltas = torch.from_numpy(np.random.default_rng(1).normal(0, 1.5, (500, 4 * 3))).to(dtype)
    for d in (deltas[:, :4], deltas):   # C = 1 and C = 3
        torch.testing.assert_close(ours.decode(d, anchors), theirs.decode_single(d, anchors), rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip(seed):
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    gt, anchors = boxes_and_anchors(300, seed, torch.float64, scale=100.0)   # coordinates up to 1e5
    torch.testing.assert_close(coder.decode(coder.encode(gt, anchors), anchors), gt, rtol=1e-12, atol=1e-7)
    gt32, anchors32 = gt.float() / 100, anchors.float() / 100
    torch.testing.assert_close(coder.decode(coder.encode(gt32, anchors32), anchors32), gt32, rtol=1e-5, atol=1e-3)


def test_decode_clamps_dw_dh():
    coder = BoxCoder(clamp=math.log(1000.0 / 16))
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[0.0, 0.0, 50.0, -50.0]])
    box = coder.decode(deltas, anchors)[0]
    width, height = float(box[2] - box[0]), float(box[3] - box[1])
    assert width == pytest.approx(10.0 * 1000.0 / 16, rel=1e-5)   # capped, no overflow
    assert height == pytest.approx(20.0 * math.exp(-50.0), rel=1e-4)  # only the upper side is clamped
    assert torch.isfinite(coder.decode(torch.full((1, 4), 1e4), anchors)).all()
    small = BoxCoder(clamp=0.5).decode(torch.tensor([[0.0, 0.0, 3.0, 0.0]]), anchors)[0]
    assert float(small[2] - small[0]) == pytest.approx(10.0 * math.exp(0.5), rel=1e-6)


def test_shapes_and_errors():
    coder = BoxCoder()
    assert coder.encode(torch.zeros((0, 4)), torch.zeros((0, 4))).shape == (0, 4)
    assert coder.decode(torch.zeros((0, 8)), torch.zeros((0, 4))).shape == (0, 8)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        coder.decode(torch.zeros((3, 5)), torch.zeros((3, 4)))
    with pytest.raises(ValueError, match="anchors"):
        coder.decode(torch.zeros((3, 8)), torch.zeros((2, 4)))
    with pytest.raises(ValueError, match="anchors"):
        coder.encode(torch.zeros((3, 4)), torch.zeros((2, 4)))
    with pytest.raises(ValueError, match="weights"):
        BoxCoder(weights=(1.0, 1.0, 0.0, 1.0))
