"""generalized_box_iou_loss: parity with torchvision's, its range and gradient on degenerate pairs."""

import pytest
import torch
from torchvision.ops import generalized_box_iou_loss as tv_giou_loss

from detkit.ops import generalized_box_iou_loss
from detkit.testing import random_boxes


def paired_boxes(n, seed):
    gen = torch.Generator().manual_seed(seed)
    a = random_boxes(n, seed, (200, 150), (1.0, 80.0))
    b = a + torch.randn(n, 4, generator=gen) * 15  # overlapping, shifted, some inverted by the noise
    return a, torch.cat((b[:, :2].minimum(b[:, 2:]), b[:, :2].maximum(b[:, 2:])), dim=1)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_torchvision(reduction, dtype):
    a, b = (x.to(dtype) for x in paired_boxes(300, 0))
    torch.testing.assert_close(generalized_box_iou_loss(a, b, reduction=reduction),
                               tv_giou_loss(a, b, reduction=reduction))


def test_values_at_the_ends_of_the_range():
    box = torch.tensor([[10.0, 10.0, 30.0, 40.0]])
    assert generalized_box_iou_loss(box, box).item() == pytest.approx(0.0, abs=1e-6)  # identical: 0
    inside = torch.tensor([[15.0, 20.0, 25.0, 30.0]])  # 100 px inside the 600 px box: IoU 1/6, C = union
    assert generalized_box_iou_loss(box, inside).item() == pytest.approx(1 - 100 / 600, abs=1e-6)
    # Disjoint boxes: IoU 0, and the loss grows with the empty part of the enclosing box, towards 2.
    near = generalized_box_iou_loss(box, torch.tensor([[31.0, 10.0, 51.0, 40.0]])).item()
    far = generalized_box_iou_loss(box, torch.tensor([[1000.0, 10.0, 1020.0, 40.0]])).item()
    assert 1.0 < near < far < 2.0


def test_degenerate_and_empty_inputs_stay_finite():
    point = torch.tensor([[5.0, 5.0, 5.0, 5.0]], requires_grad=True)
    line = torch.tensor([[5.0, 5.0, 5.0, 9.0]])
    loss = generalized_box_iou_loss(point, line, reduction="sum")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(point.grad).all()
    empty = torch.zeros(0, 4)
    assert generalized_box_iou_loss(empty, empty).shape == (0,)
    assert generalized_box_iou_loss(empty, empty, reduction="mean").item() == 0.0  # not NaN
    assert generalized_box_iou_loss(empty, empty, reduction="sum").item() == 0.0


def test_the_gradient_moves_a_box_towards_its_target():
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0]], requires_grad=True)
    target = torch.tensor([[20.0, 0.0, 30.0, 10.0]])  # disjoint: plain 1 - IoU would have no gradient
    generalized_box_iou_loss(pred, target, reduction="sum").backward()
    assert pred.grad[0, 2] < 0  # increasing x2 (towards the target) lowers the loss


def test_bad_arguments_name_what_is_valid():
    a = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="reduction must be one of none, mean, sum, got 'max'"):
        generalized_box_iou_loss(a, a, reduction="max")
    with pytest.raises(ValueError, match=r"shape \(N, 4\), got \(3, 4\) and \(2, 4\)"):
        generalized_box_iou_loss(a, torch.zeros(2, 4))
