"""RPN: head shapes, anchor order, and parity with torchvision's RegionProposalNetwork (targets, losses, proposals)."""

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN
from torchvision.models.detection.rpn import RPNHead as TVRPNHead
from torchvision.models.detection.rpn import concat_box_prediction_layers

from detkit.modeling.anchors import AnchorGenerator, shapes_from_sizes_ratios
from detkit.modeling.assigner import MaxIoUAssigner
from detkit.modeling.codec import BoxCoder
from detkit.modeling.rpn import RegionProposalNetwork, RPNHead, flatten_head_outputs
from detkit.modeling.sampler import BalancedSampler
from detkit.testing import random_boxes

IMAGE = (96, 128)
STRIDES = [8, 16, 32]
FEATURE_SIZES = [(IMAGE[0] // s, IMAGE[1] // s) for s in STRIDES]


def make_rpn(fg=0.7, bg=0.3, batch=256, fraction=0.5, pre=(2000, 1000), post=(2000, 1000), nms=0.7, channels=8):
    shapes = shapes_from_sizes_ratios([[16.0, 24.0], [32.0, 48.0], [64.0, 96.0]], [0.5, 1.0, 2.0])
    gen = AnchorGenerator(shapes=shapes, strides=STRIDES)
    return RegionProposalNetwork(
        anchor_generator=gen, head=RPNHead(in_channels=channels, num_anchors=gen.num_anchors_per_location),
        assigner=MaxIoUAssigner(pos_iou_thr=fg, neg_iou_thr=bg, allow_low_quality_matches=True),
        sampler=BalancedSampler(batch_size_per_image=batch, positive_fraction=fraction),
        box_coder=BoxCoder(weights=(1.0, 1.0, 1.0, 1.0), clamp=math.log(1000.0 / 16)),
        pre_nms_top_n=pre, post_nms_top_n=post, nms_thresh=nms, seed=0)


def make_tv(fg=0.7, bg=0.3, batch=256, fraction=0.5, pre=(2000, 1000), post=(2000, 1000), nms=0.7):
    return TVRPN(None, TVRPNHead(8, 6), fg, bg, batch, fraction, dict(training=pre[0], testing=pre[1]),
                 dict(training=post[0], testing=post[1]), nms)


def random_gt(seed, m):
    """m ground-truth boxes of 6..56 px over the image, crossing its border by up to 8."""
    return random_boxes(m, seed, (IMAGE[1], IMAGE[0]), (6.0, 56.0), margin=8.0)


def anchors_of(rpn):
    anchors, counts = rpn.anchors(FEATURE_SIZES, torch.float32, torch.device("cpu"))
    return anchors, counts


def test_head_shapes_and_flatten_order():
    head = RPNHead(in_channels=8, num_anchors=3)
    feats = [torch.rand(2, 8, 12, 16), torch.rand(2, 8, 6, 8)]
    logits, deltas = head(feats)
    assert [t.shape for t in logits] == [(2, 3, 12, 16), (2, 3, 6, 8)]
    assert [t.shape for t in deltas] == [(2, 12, 12, 16), (2, 12, 6, 8)]
    flat_l, flat_d = flatten_head_outputs(logits, deltas)
    assert flat_l.shape == (2, (12 * 16 + 6 * 8) * 3) and flat_d.shape == (2, (12 * 16 + 6 * 8) * 3, 4)
    tv_l, tv_d = concat_box_prediction_layers(logits, deltas)  # torchvision's (B*N, 1), (B*N, 4)
    torch.testing.assert_close(flat_l.reshape(-1), tv_l.reshape(-1), rtol=0, atol=0)
    torch.testing.assert_close(flat_d.reshape(-1, 4), tv_d, rtol=0, atol=0)


def test_head_init_like_torchvision():
    head = RPNHead(in_channels=64, num_anchors=3)
    for conv in (head.conv, head.cls_logits, head.bbox_pred):
        assert abs(conv.weight.std().item() - 0.01) < 0.002
        assert torch.all(conv.bias == 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fg, bg", [(0.7, 0.3), (0.5, 0.5), (0.6, 0.2)])
def test_assignment_and_targets_match_torchvision(seed, fg, bg):
    rpn, tv = make_rpn(fg, bg), make_tv(fg, bg)
    anchors, _ = anchors_of(rpn)
    gt = random_gt(seed, 1 + seed * 3)
    gt = torch.cat((gt, anchors[[100, 700]]))  # boxes exactly on anchors (IoU 1, ties for low-quality)
    tv_labels, tv_matched_boxes = tv.assign_targets_to_anchors([anchors], [{"boxes": gt}])
    tv_targets = tv.box_coder.encode(tv_matched_boxes, [anchors])[0]
    matched, labels = rpn.assign(anchors, gt)
    assert labels.dtype == torch.int8
    torch.testing.assert_close(labels.float(), tv_labels[0], rtol=0, atol=0)
    pos = torch.where(labels == 1)[0]
    assert pos.numel() > 0
    ours = rpn.box_coder.encode(gt[matched[pos]], anchors[pos])
    torch.testing.assert_close(ours, tv_targets[pos])


def test_assignment_without_ground_truth():
    rpn, tv = make_rpn(), make_tv()
    anchors, _ = anchors_of(rpn)
    tv_labels, _ = tv.assign_targets_to_anchors([anchors], [{"boxes": torch.zeros(0, 4)}])
    _, labels = rpn.assign(anchors, torch.zeros(0, 4))
    torch.testing.assert_close(labels.float(), tv_labels[0], rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_losses_match_torchvision_when_every_anchor_is_sampled(seed):
    """With a sampler that takes every labelled anchor, both implementations see the same set."""
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    rpn, tv = make_rpn(batch=100000, fraction=1.0), make_tv(batch=100000, fraction=1.0)
    anchors, counts = anchors_of(rpn)
    n = anchors.shape[0]
    targets = [{"boxes": random_gt(rng, 4)}, {"boxes": random_gt(rng, 2)}, {"boxes": torch.zeros(0, 4)}]
    logits = torch.randn(3, n, generator=gen)
    deltas = torch.randn(3, n, 4, generator=gen) * 0.3
    ours = rpn.loss(logits, deltas, anchors, targets, torch.Generator().manual_seed(0))
    labels, matched = tv.assign_targets_to_anchors([anchors] * 3, targets)
    reg = tv.box_coder.encode(matched, [anchors] * 3)
    tv_cls, tv_reg = tv.compute_loss(logits.reshape(-1, 1), deltas.reshape(-1, 4), labels, reg)
    torch.testing.assert_close(ours["loss_rpn_cls"], tv_cls)
    torch.testing.assert_close(ours["loss_rpn_reg"], tv_reg)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_proposals_match_torchvision(training, seed):
    gen = torch.Generator().manual_seed(seed)
    pre, post = (300, 200), (500, 150)
    rpn, tv = make_rpn(pre=pre, post=post), make_tv(pre=pre, post=post)
    rpn.train(training)
    tv.train(training)
    anchors, counts = anchors_of(rpn)
    n = anchors.shape[0]
    logits = torch.randn(2, n, generator=gen) * 3
    deltas = torch.randn(2, n, 4, generator=gen) * 0.5
    sizes = [IMAGE, (80, 100)]
    ours = rpn.propose(logits, deltas, anchors, counts, sizes)
    decoded = tv.box_coder.decode(deltas.reshape(-1, 4), [anchors, anchors]).view(2, -1, 4)
    theirs, _ = tv.filter_proposals(decoded, logits.reshape(-1, 1), sizes, counts)
    for a, b in zip(ours, theirs):
        assert a.shape[0] <= post[0 if training else 1]
        torch.testing.assert_close(a, b)


def test_forward_shapes_losses_and_negative_images():
    rpn = make_rpn(pre=(100, 50), post=(60, 30))
    feats = [torch.rand(2, 8, h, w, requires_grad=True) for h, w in FEATURE_SIZES]
    rpn.train()
    targets = [{"boxes": torch.zeros(0, 4)},
               {"boxes": torch.zeros(0, 4), "ignore_boxes": torch.tensor([[0., 0, 50, 50]])}]
    proposals, losses = rpn(feats, [IMAGE, IMAGE], targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_reg"].item() == 0.0
    sum(losses.values()).backward()
    assert all(p.shape[1] == 4 and p.shape[0] <= 60 for p in proposals)
    rpn.eval()
    proposals, losses = rpn(feats, [IMAGE, IMAGE])
    assert losses == {} and all(p.shape[0] <= 30 for p in proposals)
    for p in proposals:
        assert torch.all(p[:, 0::2] >= 0) and torch.all(p[:, 0::2] <= IMAGE[1])
        assert torch.all(p[:, 1::2] >= 0) and torch.all(p[:, 1::2] <= IMAGE[0])
    with pytest.raises(ValueError, match="targets"):
        rpn.train()(feats, [IMAGE, IMAGE])


def test_eval_losses_are_deterministic_and_leave_training_stream_alone():
    rpn = make_rpn(batch=32)
    feats = [torch.rand(1, 8, h, w) for h, w in FEATURE_SIZES]
    targets = [{"boxes": torch.tensor([[10., 10, 60, 50], [40, 30, 90, 90]])}]
    state = rpn.rng.generator.get_state()
    rpn.eval()
    a = rpn(feats, [IMAGE], targets)[1]
    b = rpn(feats, [IMAGE], targets)[1]
    assert torch.equal(rpn.rng.generator.get_state(), state)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_non_finite_predictions_do_not_break_proposals():
    """A diverged model must reach the loss (and the trainer's NaN guard), not fail inside NMS."""
    rpn = make_rpn(pre=(50, 50), post=(20, 20)).eval()
    anchors, counts = anchors_of(rpn)
    logits = torch.randn(1, anchors.shape[0])
    logits[0, :10] = float("nan")
    deltas = torch.zeros(1, anchors.shape[0], 4)
    deltas[0, 10:20] = float("inf")
    proposals = rpn.propose(logits, deltas, anchors, counts, [IMAGE])
    assert proposals[0].shape[0] > 0 and torch.isfinite(proposals[0]).all()
