"""RoI head: pooling, shapes, and parity with torchvision's RoIHeads (targets, losses, post-processing)."""

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign

from detkit.config import BOX_LOSSES, ConfigError, config_from_dict, validate
from detkit.modeling.assigner import MaxIoUAssigner
from detkit.modeling.codec import BoxCoder
from detkit.modeling.roi_head import DEFAULT_BOX_LOSS_WEIGHTS, BoxPredictor, FCHead, MultiLevelRoIAlign, RoIHead
from detkit.modeling.sampler import BalancedSampler
from detkit.ops import generalized_box_iou_loss
from detkit.testing import random_boxes

IMAGE = (128, 160)
K = 3
C = 8


def features(batch=2, gen=None):
    gen = gen or torch.Generator().manual_seed(0)
    return OrderedDict((f"p{level}", torch.randn(batch, C, IMAGE[0] >> level, IMAGE[1] >> level, generator=gen))
                       for level in (2, 3, 4, 5))


def image_boxes(seed, n, max_side=120):
    """n proposals or ground-truth boxes of 2..max_side + 2 px over the image, crossing its border by up to 16."""
    return random_boxes(n, seed, (IMAGE[1], IMAGE[0]), (2.0, max_side + 2.0), margin=16.0)


def make_head(batch=512, fraction=0.25, class_agnostic=False, score_thresh=0.05, detections=100, fc_dim=32,
              nms_thresh=0.5, nms_method="hard", box_voting=None, box_loss="smooth_l1", box_loss_weight=None):
    pool = MultiLevelRoIAlign(featmap_names=["p2", "p3", "p4", "p5"], strides=[4, 8, 16, 32], output_size=7,
                              sampling_ratio=2)
    box_head = FCHead(in_channels=C, pool_size=7, num_fc=2, fc_dim=fc_dim)
    return RoIHead(roi_pool=pool, box_head=box_head,
                   predictor=BoxPredictor(in_features=fc_dim, num_classes=K, class_agnostic=class_agnostic),
                   assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5, allow_low_quality_matches=False),
                   sampler=BalancedSampler(batch_size_per_image=batch, positive_fraction=fraction),
                   box_coder=BoxCoder(weights=(10.0, 10.0, 5.0, 5.0), clamp=math.log(1000.0 / 16)),
                   score_thresh=score_thresh, nms_thresh=nms_thresh, nms_method=nms_method,
                   detections_per_img=detections, seed=0, box_voting=box_voting, box_loss=box_loss,
                   box_loss_weight=box_loss_weight)


class _TVPredictor(nn.Module):
    """Our predictor seen through torchvision's 4(K+1) layout (zero deltas for the background slot)."""

    def __init__(self, predictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, x):
        logits, deltas = self.predictor(x)
        return logits, torch.cat((torch.zeros_like(deltas[:, :4]), deltas), dim=1)


def make_tv(head, batch=512, fraction=0.25, score_thresh=0.05, detections=100):
    return RoIHeads(MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2), head.box_head, _TVPredictor(head.predictor),
                    0.5, 0.5, batch, fraction, None, score_thresh, 0.5, detections)


def test_pooling_matches_torchvision_multiscale_roialign():
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    feats = features(gen=gen)
    boxes = [image_boxes(rng, 40, max_side=150), image_boxes(rng, 25, max_side=30)]
    ours = MultiLevelRoIAlign(featmap_names=["p2", "p3", "p4", "p5"], strides=[4, 8, 16, 32])(feats, boxes)
    theirs = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)(feats, boxes, [IMAGE, IMAGE])
    assert ours.shape == (65, C, 7, 7)
    torch.testing.assert_close(ours, theirs)
    single = MultiLevelRoIAlign(featmap_names=["p3"], strides=[8])(feats, boxes)
    torch.testing.assert_close(single, MultiScaleRoIAlign(["p3"], 7, 2)(feats, boxes, [IMAGE, IMAGE]))


def test_head_and_predictor_shapes():
    x = torch.rand(10, C, 7, 7)
    h = FCHead(in_channels=C, pool_size=7, num_fc=3, fc_dim=16)
    assert len(h.fcs) == 3 and h(x).shape == (10, 16)
    logits, deltas = BoxPredictor(in_features=16, num_classes=K)(h(x))
    assert logits.shape == (10, K + 1) and deltas.shape == (10, 4 * K)
    _, deltas = BoxPredictor(in_features=16, num_classes=K, class_agnostic=True)(h(x))
    assert deltas.shape == (10, 4)


@pytest.mark.parametrize("norm, norm_type", [("ln", nn.LayerNorm), ("gn", nn.GroupNorm)])
def test_fc_head_norm_is_per_roi(norm, norm_type):
    torch.manual_seed(0)
    x = torch.rand(6, C, 7, 7)
    h = FCHead(in_channels=C, pool_size=7, num_fc=2, fc_dim=64, norm=norm).train()
    assert [type(n) for n in h.norms] == [norm_type, norm_type]
    assert all(fc.bias is None for fc in h.fcs)  # the norm's shift replaces the bias
    out = h(x)
    # Layer by layer: Linear, then each RoI's features normalised on their own, then ReLU.
    ref = x.flatten(1)
    for fc in h.fcs:
        z = fc(ref)
        groups = 1 if norm == "ln" else FCHead.GN_GROUPS
        z = z.view(len(z), groups, -1)
        z = (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-5)
        ref = torch.relu(z.view(len(z), -1))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # No batch statistics: a RoI's features do not depend on the other RoIs, in training or not.
    torch.testing.assert_close(h(x[2:3]), out[2:3], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(h.eval()(x), out, rtol=1e-4, atol=1e-5)


def test_fc_head_rejects_unknown_norm_and_ungroupable_width():
    with pytest.raises(ValueError, match="'bn': expected one of none, ln, gn"):
        FCHead(in_channels=C, pool_size=7, norm="bn")
    with pytest.raises(ValueError, match="divisible by 32, got 48"):
        FCHead(in_channels=C, pool_size=7, fc_dim=48, norm="gn")
    plain = FCHead(in_channels=C, pool_size=7, fc_dim=16)
    assert plain.norms is None and all(fc.bias is not None for fc in plain.fcs)



@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_and_targets_match_torchvision(seed):
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    head = make_head()
    tv = make_tv(head)
    gt = image_boxes(rng, 5)
    gt_labels = torch.randint(1, K + 1, (5,), generator=gen)
    proposals = torch.cat((image_boxes(rng, 300), gt))  # ground truth appended, as both heads do
    proposals = torch.cat((proposals, gt[:2] + 0.5))  # near-copies: IoU just below 1
    tv_matched, tv_labels = tv.assign_targets_to_proposals([proposals], [gt], [gt_labels])
    labels, matched = head.label_proposals(proposals, gt, gt_labels)
    torch.testing.assert_close(labels, tv_labels[0], rtol=0, atol=0)
    pos = torch.where(labels > 0)[0]
    assert pos.numel() >= 7
    torch.testing.assert_close(matched[pos], tv_matched[0][pos], rtol=0, atol=0)
    tv_targets = tv.box_coder.encode([gt[tv_matched[0]]], [proposals])[0]
    torch.testing.assert_close(head.box_coder.encode(gt[matched[pos]], proposals[pos]), tv_targets[pos])


def test_labels_without_ground_truth():
    head = make_head()
    labels, matched = head.label_proposals(image_boxes(0, 20), torch.zeros(0, 4),
                                           torch.zeros(0, dtype=torch.int64))
    assert torch.all(labels == 0) and torch.all(matched == 0)


def test_losses_match_torchvision_when_every_proposal_is_sampled():
    gen, rng = torch.Generator().manual_seed(3), np.random.default_rng(3)
    head = make_head(batch=100000, fraction=1.0)
    tv = make_tv(head, batch=100000, fraction=1.0)
    feats = features(gen=gen)
    targets = [{"boxes": image_boxes(rng, 4), "labels": torch.tensor([1, 2, 3, 1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    proposals = [image_boxes(rng, 200), image_boxes(rng, 150)]
    head.train()
    tv.train()
    _, ours = head(feats, proposals, [IMAGE, IMAGE], targets)
    _, theirs = tv(feats, [p.clone() for p in proposals], [IMAGE, IMAGE], targets)
    torch.testing.assert_close(ours["loss_roi_cls"], theirs["loss_classifier"])
    torch.testing.assert_close(ours["loss_roi_reg"], theirs["loss_box_reg"])
    assert ours["loss_roi_reg"] > 0


def _giou_case(box_loss_weight=None):
    """A GIoU head, its features, proposals, targets and the positives' sampling, all seeded."""
    rng = np.random.default_rng(4)
    head = make_head(batch=64, box_loss="giou", box_loss_weight=box_loss_weight).train()
    targets = [{"boxes": image_boxes(rng, 3), "labels": torch.tensor([1, 2, 3])},
               {"boxes": image_boxes(rng, 2), "labels": torch.tensor([2, 2])}]
    proposals = [torch.cat((t["boxes"] + 3.0, image_boxes(rng, 40))) for t in targets]
    return head, features(), proposals, targets


def test_giou_box_loss_is_one_minus_giou_of_the_decoded_positives_times_ten():
    head, feats, proposals, targets = _giou_case()
    assert head.box_loss == "giou" and head.box_loss_weight == 10.0  # MMDetection's weight by default
    _, losses = head(feats, proposals, [IMAGE, IMAGE], targets)
    # The same sampling by hand: decode the predicted deltas of each positive's class on its RoI.
    rois, labels, pos_rows, reg_targets = head.sample_targets(proposals, targets, head.rng.fresh(torch.device("cpu")))
    assert pos_rows.numel() > 0
    with torch.no_grad():
        _, deltas = head.predictor(head.box_head(head.roi_pool(feats, rois)))
    cols = labels[pos_rows] - 1
    pred = deltas.view(deltas.shape[0], K, 4)[pos_rows, cols]
    pos_rois = torch.cat(rois)[pos_rows]
    gt = torch.cat([t["boxes"] for t in targets])
    expected = generalized_box_iou_loss(head.box_coder.decode(pred, pos_rois),
                                        head.box_coder.decode(reg_targets, pos_rois), reduction="sum")
    torch.testing.assert_close(losses["loss_roi_reg"], 10.0 * expected / labels.numel())
    # The targets decode back to ground-truth boxes (each positive's matched one).
    decoded = head.box_coder.decode(reg_targets, pos_rois)
    assert (torch.cdist(decoded, gt).min(dim=1).values < 1e-3).all()
    losses["loss_roi_reg"].backward()
    assert head.predictor.bbox_pred.weight.grad.abs().sum() > 0


def test_giou_box_loss_is_zero_for_perfect_deltas_and_its_weight_scales_it():
    head, feats, proposals, targets = _giou_case()
    rois, labels, pos_rows, reg_targets = head.sample_targets(proposals, targets, head.rng.fresh(torch.device("cpu")))
    logits = torch.zeros(labels.numel(), K + 1)
    deltas = torch.zeros(labels.numel(), K, 4)
    deltas[pos_rows, labels[pos_rows] - 1] = reg_targets
    perfect = head.loss(logits, deltas.flatten(1), labels, pos_rows, reg_targets, rois=rois)["loss_roi_reg"]
    assert perfect.item() == pytest.approx(0.0, abs=1e-5)
    off = head.loss(logits, torch.zeros_like(deltas).flatten(1), labels, pos_rows, reg_targets, rois=rois)
    heavy = _giou_case(box_loss_weight=2.5)[0]
    off_heavy = heavy.loss(logits, torch.zeros_like(deltas).flatten(1), labels, pos_rows, reg_targets, rois=rois)
    torch.testing.assert_close(off_heavy["loss_roi_reg"] * 10.0, off["loss_roi_reg"] * 2.5)
    assert off["loss_roi_reg"] > 0
    with pytest.raises(ValueError, match="pass rois"):
        head.loss(logits, deltas.flatten(1), labels, pos_rows, reg_targets)


def test_giou_box_loss_decodes_in_float32_under_bf16_deltas():
    head, feats, proposals, targets = _giou_case()
    rois, labels, pos_rows, reg_targets = head.sample_targets(proposals, targets, head.rng.fresh(torch.device("cpu")))
    deltas = torch.zeros(labels.numel(), K, 4)
    deltas[pos_rows, labels[pos_rows] - 1] = reg_targets
    logits = torch.zeros(labels.numel(), K + 1)
    # bf16 deltas as autocast gives them: decoding in bf16 would round the box corners by pixels.
    loss = head.loss(logits, deltas.flatten(1).bfloat16(), labels, pos_rows, reg_targets, rois=rois)["loss_roi_reg"]
    assert loss.dtype == torch.float32
    assert loss.item() < 0.05  # bf16 rounding of the deltas only, not of the coordinates


def test_box_loss_settings_are_checked():
    with pytest.raises(ValueError, match="box_loss must be one of smooth_l1, giou, got 'l1'"):
        make_head(box_loss="l1")
    with pytest.raises(ValueError, match="box_loss_weight must be > 0"):
        make_head(box_loss_weight=0.0)
    assert make_head().box_loss_weight == 1.0


@pytest.mark.parametrize("box_loss", BOX_LOSSES)
def test_every_box_loss_the_config_accepts_builds_a_head_with_its_default_weight(box_loss):
    # One list for the config's choices and the head's check: a loss added to one is known to the other.
    validate(config_from_dict({"model": {"roi_head": {"box_loss": box_loss}}}))
    assert make_head(box_loss=box_loss).box_loss_weight == DEFAULT_BOX_LOSS_WEIGHTS[box_loss]
    with pytest.raises(ConfigError, match="model.roi_head.box_loss"):
        validate(config_from_dict({"model": {"roi_head": {"box_loss": box_loss + "_x"}}}))


def test_box_loss_weight_scales_the_smooth_l1_loss_too():
    rng = np.random.default_rng(5)
    targets = [{"boxes": image_boxes(rng, 3), "labels": torch.tensor([1, 2, 3])}]
    proposals = [torch.cat((targets[0]["boxes"] + 3.0, image_boxes(rng, 40)))]
    feats = features(batch=1)
    plain = make_head(batch=64).train()
    heavy = make_head(batch=64, box_loss_weight=3.0).train()
    heavy.load_state_dict(plain.state_dict())
    a = plain(feats, proposals, [IMAGE], targets)[1]
    b = heavy(feats, proposals, [IMAGE], targets)[1]
    assert a["loss_roi_reg"] > 0
    torch.testing.assert_close(b["loss_roi_reg"], 3.0 * a["loss_roi_reg"])
    torch.testing.assert_close(b["loss_roi_cls"], a["loss_roi_cls"])


@pytest.mark.parametrize("seed", [0, 1])
def test_postprocess_matches_torchvision(seed):
    gen, rng = torch.Generator().manual_seed(seed), np.random.default_rng(seed)
    head = make_head(score_thresh=0.2, detections=50)
    tv = make_tv(head, score_thresh=0.2, detections=50)
    proposals = [image_boxes(rng, 300), image_boxes(rng, 100)]
    logits = torch.randn(400, K + 1, generator=gen) * 2
    deltas = torch.randn(400, 4 * K, generator=gen)
    sizes = [IMAGE, (100, 120)]
    ours = head.postprocess(logits, deltas, proposals, sizes)
    tv_deltas = torch.cat((torch.zeros(400, 4), deltas), dim=1)
    boxes, scores, labels = tv.postprocess_detections(logits, tv_deltas, proposals, sizes)
    for det, b, s, lab in zip(ours, boxes, scores, labels):
        assert det["boxes"].shape[0] > 10
        torch.testing.assert_close(det["boxes"], b)
        torch.testing.assert_close(det["scores"], s)
        torch.testing.assert_close(det["labels"], lab, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_postprocess_soft_nms_per_class(method):
    """Soft-NMS post-processing = the hard path's candidates (NMS disabled), soft-NMS per class by the
    plain-Python reference, merged by decayed score, top detections_per_img."""
    from tests.ops.test_soft_nms import reference_soft_nms

    gen, rng = torch.Generator().manual_seed(3), np.random.default_rng(3)
    proposals = [image_boxes(rng, 200, max_side=60)]
    logits = torch.randn(200, K + 1, generator=gen) * 2
    deltas = torch.randn(200, 4 * K, generator=gen) * 0.5
    candidates = make_head(score_thresh=0.1, detections=10**6, nms_thresh=1.0).postprocess(
        logits, deltas, proposals, [IMAGE])[0]  # IoU > 1 never holds: every candidate, by score
    soft = make_head(score_thresh=0.1, detections=40, nms_thresh=0.3, nms_method=method).postprocess(
        logits, deltas, proposals, [IMAGE])[0]
    expected = []  # (decayed score, label, box)
    for label in range(1, K + 1):
        rows = torch.nonzero(candidates["labels"] == label).flatten()
        keep, decayed = reference_soft_nms(candidates["boxes"][rows], candidates["scores"][rows], method, 0.5, 0.3, 0.1)
        expected += [(sc, label, candidates["boxes"][rows[k]]) for k, sc in zip(keep, decayed)]
    expected = sorted(expected, key=lambda e: -e[0])[:40]
    assert soft["boxes"].shape[0] == 40 and len(expected) == 40
    torch.testing.assert_close(soft["scores"].double(), torch.tensor([e[0] for e in expected], dtype=torch.float64))
    assert soft["labels"].tolist() == [e[1] for e in expected]
    torch.testing.assert_close(soft["boxes"], torch.stack([e[2] for e in expected]))
    # soft-NMS keeps same-class boxes overlapping above nms_thresh, which hard NMS never outputs
    every = make_head(score_thresh=0.1, detections=10**6, nms_thresh=0.3, nms_method=method).postprocess(
        logits, deltas, proposals, [IMAGE])[0]
    same_class = every["labels"][:, None] == every["labels"][None, :]
    overlap = torchvision.ops.box_iou(every["boxes"], every["boxes"]).fill_diagonal_(0)
    assert bool((overlap[same_class] > 0.3).any())


@pytest.mark.parametrize("method", ["hard", "gaussian"])
def test_postprocess_box_voting(method):
    """Box voting moves each detection to the score-weighted mean of its class's candidates (before any
    suppression) overlapping it at >= the threshold; scores, labels and the detections' order are unchanged."""
    from tests.ops.test_box_voting import reference_box_voting

    gen, rng = torch.Generator().manual_seed(5), np.random.default_rng(5)
    proposals = [image_boxes(rng, 200, max_side=60)]
    logits = torch.randn(200, K + 1, generator=gen) * 2
    deltas = torch.randn(200, 4 * K, generator=gen) * 0.2
    kwargs = dict(score_thresh=0.1, detections=30, nms_thresh=0.4, nms_method=method)
    plain = make_head(**kwargs).postprocess(logits, deltas, proposals, [IMAGE])[0]
    voted = make_head(**kwargs, box_voting=0.7).postprocess(logits, deltas, proposals, [IMAGE])[0]
    candidates = make_head(score_thresh=0.1, detections=10**6, nms_thresh=1.0).postprocess(
        logits, deltas, proposals, [IMAGE])[0]
    expected = reference_box_voting(plain["boxes"], plain["labels"], candidates["boxes"], candidates["scores"],
                                    candidates["labels"], 0.7)
    torch.testing.assert_close(voted["boxes"].double(), expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(voted["scores"], plain["scores"], rtol=0, atol=0)
    assert torch.equal(voted["labels"], plain["labels"])
    assert not torch.allclose(voted["boxes"], plain["boxes"])


def test_box_voting_threshold_is_checked():
    with pytest.raises(ValueError, match=r"box_voting must be an IoU in \[0, 1\] or None, got 2.0"):
        make_head(box_voting=2.0)


def test_soft_nms_method_is_checked():
    with pytest.raises(ValueError, match="nms_method must be 'hard', 'linear' or 'gaussian', got 'soft'"):
        make_head(nms_method="soft")


def test_forward_eval_and_negative_training():
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    head = make_head(batch=64)
    feats = features(gen=gen)
    proposals = [image_boxes(rng, 50), image_boxes(rng, 30)]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    head.train()
    dets, losses = head(feats, proposals, [IMAGE, IMAGE], [empty, empty])
    assert dets is None and set(losses) == {"loss_roi_cls", "loss_roi_reg"}
    assert torch.isfinite(losses["loss_roi_cls"]) and losses["loss_roi_reg"].item() == 0.0
    sum(losses.values()).backward()
    head.eval()
    dets, losses = head(feats, proposals, [IMAGE, IMAGE])
    assert losses == {} and len(dets) == 2
    for d in dets:
        assert d["boxes"].shape == (d["scores"].shape[0], 4) and d["labels"].dtype == torch.int64
        assert d["boxes"].shape[0] <= 100 and torch.all((d["labels"] >= 1) & (d["labels"] <= K))
    agnostic = make_head(class_agnostic=True)  # one box per RoI, shared by every class
    target = {"boxes": torch.tensor([[10., 10, 60, 70]]), "labels": torch.tensor([2])}
    _, losses = agnostic.train()(feats, proposals, [IMAGE, IMAGE], [target, empty])
    assert losses["loss_roi_reg"] > 0
    dets, _ = agnostic.eval()(feats, proposals, [IMAGE, IMAGE])
    assert all(d["boxes"].shape[1] == 4 for d in dets)
