"""detkit/modeling/cascade_head.py: Cascade R-CNN's stages, losses, inference, and the model around it."""

import json
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch

from detkit.config import load_config
from detkit.errors import ConfigError
from detkit.modeling.assigner import MaxIoUAssigner
from detkit.modeling.cascade_head import CascadeRoIHead
from detkit.modeling.codec import BoxCoder
from detkit.modeling.detector import build_detector
from detkit.modeling.fold_bn import fold_batch_norm
from detkit.modeling.roi_head import BoxPredictor, ConvFCHead, FCHead, MultiLevelRoIAlign, RoIHead
from detkit.modeling.sampler import BalancedSampler
from tests.engine.conftest import tiny_overrides, train_tiny_run

IMAGE = (96, 128)  # (h, w)
K = 3
C = 8
FC = 32


def features(batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((f"p{level}", torch.randn(batch, C, IMAGE[0] >> level, IMAGE[1] >> level, generator=gen))
                       for level in (2, 3, 4, 5))


def integer_boxes(n, seed):
    """n boxes with integer corners inside the image (decoding zero deltas gives them back exactly)."""
    gen = torch.Generator().manual_seed(seed)
    x1 = torch.randint(0, IMAGE[1] - 40, (n,), generator=gen)
    y1 = torch.randint(0, IMAGE[0] - 40, (n,), generator=gen)
    w = torch.randint(8, 40, (n,), generator=gen)
    h = torch.randint(8, 40, (n,), generator=gen)
    return torch.stack((x1, y1, x1 + w, y1 + h), dim=1).float()


def targets():
    gen = torch.Generator().manual_seed(5)
    out = []
    for i in range(2):
        boxes = integer_boxes(3, 10 + i)
        out.append({"boxes": boxes, "labels": torch.randint(1, K + 1, (3,), generator=gen)})
    return out


def near_gt_proposals(tgts, n=40, seed=1):
    """Proposals jittered around the ground truth (many positives at every threshold), plus random boxes."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i, t in enumerate(tgts):
        gt = t["boxes"].repeat(n // 4, 1)
        jitter = torch.randn(gt.shape, generator=gen) * 2.0
        out.append(torch.cat((gt + jitter, integer_boxes(n - gt.shape[0], seed + i))))
    return out


POOL = MultiLevelRoIAlign(featmap_names=["p2", "p3", "p4", "p5"], strides=[4, 8, 16, 32], output_size=7,
                          sampling_ratio=2)


def make_stage(iou=0.5, weights=(10.0, 10.0, 5.0, 5.0), seed=0, class_agnostic=True, score_thresh=0.05,
               box_head=None, box_loss="smooth_l1"):
    box_head = box_head or FCHead(in_channels=C, pool_size=7, num_fc=2, fc_dim=FC)
    return RoIHead(roi_pool=POOL, box_head=box_head,
                   predictor=BoxPredictor(in_features=FC, num_classes=K, class_agnostic=class_agnostic),
                   assigner=MaxIoUAssigner(pos_iou_thr=iou, neg_iou_thr=iou, allow_low_quality_matches=False),
                   sampler=BalancedSampler(batch_size_per_image=64, positive_fraction=0.25),
                   box_coder=BoxCoder(weights=weights, clamp=math.log(1000.0 / 16)),
                   score_thresh=score_thresh, nms_thresh=0.5, detections_per_img=50, seed=seed, box_loss=box_loss)


def make_cascade(ious=(0.5, 0.6, 0.7), loss_weights=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    stages = [make_stage(iou, tuple(w * (t + 1) for w in (10.0, 10.0, 5.0, 5.0)), seed=seed + t, **kwargs)
              for t, iou in enumerate(ious)]
    return CascadeRoIHead(stages=stages, stage_loss_weights=loss_weights or [0.5 ** t for t in range(len(ious))])


def copy_into(stage, single):
    """Give ``stage`` the box head and classifier of ``single`` (both class-agnostic)."""
    stage.box_head.load_state_dict(single.box_head.state_dict())
    stage.predictor.load_state_dict(single.predictor.state_dict())


# ---------------------------------------------------------------------------------------------- training
def test_training_gives_finite_weighted_losses_for_every_stage_and_trains_every_stage():
    head = make_cascade().train()
    tgts = targets()
    dets, losses = head(features(), near_gt_proposals(tgts), [IMAGE, IMAGE], tgts)
    assert dets is None
    assert set(losses) == {f"loss_roi_{kind}_s{t}" for kind in ("cls", "reg") for t in (1, 2, 3)}
    assert all(k.startswith("loss_roi_") for k in losses)  # the convention logging and plots rely on
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert all(losses[f"loss_roi_reg_s{t}"] > 0 for t in (1, 2, 3))  # positives at every threshold
    sum(losses.values()).backward()
    for t, stage in enumerate(head.stages):
        grads = [p.grad for p in stage.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), t
        assert stage.predictor.bbox_pred.weight.grad.abs().sum() > 0, t


def test_stage_loss_weights_scale_each_stage_and_stage_one_is_the_single_head():
    tgts = targets()
    feats, props = features(), near_gt_proposals(tgts)
    plain = make_cascade(loss_weights=[1.0, 1.0, 1.0]).train()
    weighted = make_cascade(loss_weights=[1.0, 0.5, 0.25]).train()
    a = plain(feats, props, [IMAGE, IMAGE], tgts)[1]
    b = weighted(feats, props, [IMAGE, IMAGE], tgts)[1]
    for t, w in ((1, 1.0), (2, 0.5), (3, 0.25)):
        for kind in ("cls", "reg"):
            torch.testing.assert_close(b[f"loss_roi_{kind}_s{t}"], a[f"loss_roi_{kind}_s{t}"] * w)
    # Stage 1 samples the proposals as the single head does: the same RoIs, the same losses.
    single = make_stage(seed=0).train()
    copy_into(single, plain.stages[0])
    ref = single(feats, props, [IMAGE, IMAGE], tgts)[1]
    torch.testing.assert_close(a["loss_roi_cls_s1"], ref["loss_roi_cls"])
    torch.testing.assert_close(a["loss_roi_reg_s1"], ref["loss_roi_reg"])


def test_giou_box_loss_in_every_stage(tmp_path):
    cfg = load_config(None, tiny_overrides(tmp_path, **{"model.roi_head.cascade": "[0.5,0.6,0.7]",
                                                        "model.roi_head.box_loss": "giou"}))
    built = build_detector(cfg, K, log=lambda *_: None).roi_head
    assert [(s.box_loss, s.box_loss_weight) for s in built.stages] == [("giou", 10.0)] * 3
    head = make_cascade(box_loss="giou").train()
    tgts = targets()
    _, losses = head(features(), near_gt_proposals(tgts), [IMAGE, IMAGE], tgts)
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(0 < losses[f"loss_roi_reg_s{t}"] for t in (1, 2, 3))
    sum(losses.values()).backward()
    assert all(s.predictor.bbox_pred.weight.grad.abs().sum() > 0 for s in head.stages)
    with pytest.raises(ConfigError, match="model.roi_head.box_loss' = 'iou' is not valid; choose one of"):
        load_config(None, tiny_overrides(tmp_path, **{"model.roi_head.box_loss": "iou"}))
    with pytest.raises(ConfigError, match="model.roi_head.box_loss_weight' = 0.0 must be > 0"):
        load_config(None, tiny_overrides(tmp_path, **{"model.roi_head.box_loss_weight": 0.0}))


def test_later_stages_train_on_the_refined_boxes_without_gradient_through_them():
    tgts = targets()
    feats, props = features(), near_gt_proposals(tgts)
    head = make_cascade(ious=(0.5, 0.6)).train()
    losses = head(feats, props, [IMAGE, IMAGE], tgts)[1]
    (losses["loss_roi_cls_s2"] + losses["loss_roi_reg_s2"]).backward()
    assert all(p.grad is None for p in head.stages[0].parameters())  # the boxes were detached
    # Stage 2's input depends on stage 1's regression: move it and stage 2's losses change (in eval, with
    # targets: validation losses, the same sampling on every call).
    head.eval()
    with torch.no_grad():
        before = head(feats, props, [IMAGE, IMAGE], tgts)[1]
        head.stages[0].predictor.bbox_pred.bias.copy_(torch.tensor([1.0, -1.0, 0.5, 0.5]))
        after = head(feats, props, [IMAGE, IMAGE], tgts)[1]
    torch.testing.assert_close(after["loss_roi_cls_s1"], before["loss_roi_cls_s1"])
    assert not torch.isclose(after["loss_roi_reg_s2"], before["loss_roi_reg_s2"])


# ---------------------------------------------------------------------------------------------- inference
def test_eval_outputs_valid_detections():
    head = make_cascade(score_thresh=0.0).eval()
    with torch.no_grad():
        torch.nn.init.normal_(head.stages[1].predictor.bbox_pred.weight, std=0.5)
    props = [integer_boxes(30, 1), integer_boxes(12, 2)]
    dets, losses = head(features(), props, [IMAGE, IMAGE])
    assert losses == {} and len(dets) == 2
    for det in dets:
        boxes, scores, labels = det["boxes"], det["scores"], det["labels"]
        assert boxes.shape[1] == 4 and 0 < boxes.shape[0] <= 50
        assert scores.shape == labels.shape == (boxes.shape[0],) and labels.dtype == torch.int64
        assert ((labels >= 1) & (labels <= K)).all() and ((scores >= 0) & (scores <= 1)).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert (boxes >= 0).all() and (boxes[:, 0::2] <= IMAGE[1]).all() and (boxes[:, 1::2] <= IMAGE[0]).all()
        assert (scores[:-1] >= scores[1:]).all()


def single_head_and_its_two_stage_copy():
    """(a single head without box regression and a random classifier, a 2-stage cascade whose stages are
    copies of it), both in eval mode: the cascade must then detect exactly what the single head does."""
    single = make_stage(score_thresh=0.01).eval()
    with torch.no_grad():
        single.predictor.bbox_pred.weight.zero_()
        torch.nn.init.normal_(single.predictor.cls_score.weight, std=0.3)
    head = make_cascade(ious=(0.5, 0.6), score_thresh=0.01).eval()
    for stage in head.stages:
        copy_into(stage, single)
    return single, head


@pytest.mark.parametrize("hflip", [False, True])
def test_two_stages_of_the_single_heads_weights_without_regression_give_its_detections_exactly(hflip):
    """Zero regression leaves the boxes as they are (integer corners decode exactly), so every stage
    classifies the proposals; identical classifiers average to the single head's probabilities."""
    single, head = single_head_and_its_two_stage_copy()
    props = [integer_boxes(40, 3), integer_boxes(25, 4)]
    feats = features(batch=4 if hflip else 2)
    with torch.no_grad():
        if hflip:
            ours, theirs = head.postprocess_hflip(feats, props, [IMAGE, IMAGE]), \
                single.postprocess_hflip(feats, props, [IMAGE, IMAGE])
        else:
            ours, theirs = head(feats, props, [IMAGE, IMAGE])[0], single(feats, props, [IMAGE, IMAGE])[0]
    for a, b in zip(ours, theirs):
        assert a["boxes"].shape[0] > 5
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key]), key


def test_three_equal_stages_match_the_single_head_and_the_boxes_come_from_the_last_stage():
    single = make_stage(score_thresh=0.01).eval()
    with torch.no_grad():
        single.predictor.bbox_pred.weight.zero_()
        torch.nn.init.normal_(single.predictor.cls_score.weight, std=0.3)
    head = make_cascade(score_thresh=0.01).eval()
    for stage in head.stages:
        copy_into(stage, single)
    props = [integer_boxes(40, 3), integer_boxes(25, 4)]
    with torch.no_grad():
        ours, theirs = head(features(), props, [IMAGE, IMAGE])[0], single(features(), props, [IMAGE, IMAGE])[0]
    for a, b in zip(ours, theirs):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key])
    # Shift by the last stage's regression only: every detection moves by its offset (dx = 20 / 30
    # of the width with the third stage's weight 30), the scores stay.
    with torch.no_grad():
        head.stages[-1].predictor.bbox_pred.bias.copy_(torch.tensor([20.0, 0.0, 0.0, 0.0]))
        moved = head(features(), props, [IMAGE, IMAGE])[0]
    for a, m in zip(ours, moved):
        width = a["boxes"][:, 2] - a["boxes"][:, 0]
        inside = (a["boxes"][:, 2] + width * 2 / 3) < IMAGE[1]  # not clipped at the right border
        keep = torch.isin(m["scores"], a["scores"][inside])
        assert keep.any()
        by_score = {float(s): b for s, b in zip(a["scores"], a["boxes"])}
        for s, b in zip(m["scores"][keep], m["boxes"][keep]):
            ref = by_score[float(s)]
            shift = (ref[2] - ref[0]) * 2 / 3
            torch.testing.assert_close(b, ref + torch.stack((shift, 0 * shift, shift, 0 * shift)))


def test_scores_average_every_stages_classifier_on_the_last_stages_input_boxes():
    """The paper's ensemble: stage 1 moves the boxes; all three classifiers score the moved boxes."""
    head = make_cascade(score_thresh=0.01).eval()
    with torch.no_grad():
        for stage in head.stages:
            torch.nn.init.normal_(stage.predictor.cls_score.weight, std=0.3)
            stage.predictor.bbox_pred.weight.zero_()
        head.stages[0].predictor.bbox_pred.bias.copy_(torch.tensor([2.0, 1.0, 0.0, 0.0]))
    props = [integer_boxes(40, 3), integer_boxes(25, 4)]
    feats = features()
    with torch.no_grad():
        ours = head(feats, props, [IMAGE, IMAGE])[0]
        flat = torch.cat(props)
        moved = head.stages[0].box_coder.decode(torch.tensor([[2.0, 1.0, 0.0, 0.0]]).expand(len(flat), 4), flat)
        moved = moved.clamp(min=0).minimum(torch.tensor([IMAGE[1], IMAGE[0], IMAGE[1], IMAGE[0]]))
        pooled = POOL(feats, list(moved.split([40, 25])))
        probs = [torch.softmax(s.predictor(s.box_head(pooled))[0], -1) for s in head.stages]
        assert not torch.allclose(probs[0], probs[2], atol=1e-3)  # the classifiers differ
        scores = ((probs[0] + probs[1] + probs[2]) / 3)[:, 1:]
        expected = head.stages[-1].select(scores, moved, [40, 25], [IMAGE, IMAGE])
        last_only = head.stages[-1].select(probs[2][:, 1:], moved, [40, 25], [IMAGE, IMAGE])
    for a, b, c in zip(ours, expected, last_only):
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key])
        assert a["scores"].shape != c["scores"].shape or not torch.allclose(a["scores"], c["scores"])


def test_the_cascade_refuses_class_specific_stages_and_a_single_stage():
    with pytest.raises(ValueError, match="class-agnostic"):
        CascadeRoIHead(stages=[make_stage(), make_stage(class_agnostic=False)], stage_loss_weights=[1, 1])
    with pytest.raises(ValueError, match="at least 2 stages"):
        CascadeRoIHead(stages=[make_stage()], stage_loss_weights=[1])


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("value, message", [
    ("[0.6]", "at least 2 stages"),
    ("[0.5,0.5]", "must rise"),
    ("[0.6,0.5,0.7]", "must rise"),
    ("[0.5,1.0]", r"cascade\[1\]' = 1.0 must be an IoU threshold in \(0, 1\)"),
    ("[0.0,0.5]", r"cascade\[0\]' = 0.0 must be an IoU threshold"),
])
def test_cascade_thresholds_are_validated(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, tiny_overrides(tmp_path, **{"model.roi_head.cascade": value}))


def test_cascade_loss_weights_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="cascade_loss_weights' must have 3 entries"):
        load_config(None, tiny_overrides(tmp_path, **{"model.roi_head.cascade": "[0.5,0.6,0.7]",
                                                      "model.roi_head.cascade_loss_weights": "[1.0,0.5]"}))
    with pytest.raises(ConfigError, match="model.roi_head.cascade is not set"):
        load_config(None, tiny_overrides(tmp_path, **{"model.roi_head.cascade_loss_weights": "[1.0,0.5]"}))


def test_build_detector_wires_the_stages_from_the_config(tmp_path):
    default = build_detector(load_config(None, tiny_overrides(tmp_path)), 2, log=lambda *_: None)
    assert type(default.roi_head) is RoIHead  # no cascade: the single head, as before
    assert load_config(None, tiny_overrides(tmp_path)).model.roi_head.cascade is None
    cfg = load_config(None, tiny_overrides(tmp_path, **{"model.roi_head.cascade": "[0.5,0.6,0.7]",
                                                        "model.roi_head.num_conv": 1,
                                                        "model.roi_head.conv_dim": 8}))
    model = build_detector(cfg, 2, log=lambda *_: None)
    head = model.roi_head
    assert isinstance(head, CascadeRoIHead) and head.num_stages == 3
    assert [s.assigner.pos_iou_thr for s in head.stages] == [0.5, 0.6, 0.7]
    assert [s.assigner.neg_iou_thr for s in head.stages] == [0.5, 0.6, 0.7]
    assert [s.box_coder.weights for s in head.stages] == [(10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)]
    assert head.stage_loss_weights == [1.0, 0.5, 0.25]
    assert all(isinstance(s.box_head, ConvFCHead) and s.predictor.class_agnostic for s in head.stages)
    assert len({id(s.box_head) for s in head.stages}) == 3  # one box head each
    assert head.predictor.num_classes == 2 and head.rng is head.stages[0].rng
    keys = list(model.state_dict())
    assert any(k.startswith("roi_head.stages.2.box_head.convs.0") for k in keys)
    assert not any(k.startswith("roi_head.box_head") for k in keys)


def test_bn_folding_keeps_the_cascades_detections(tmp_path):
    cfg = load_config(None, tiny_overrides(tmp_path, **{"model.roi_head.cascade": "[0.5,0.6]",
                                                        "model.roi_head.num_conv": 1,
                                                        "model.roi_head.conv_dim": 8,
                                                        "model.roi_head.score_thresh": 0.0,
                                                        "model.memory_format": "contiguous"}))
    torch.manual_seed(0)
    model = build_detector(cfg, 2, log=lambda *_: None)
    for module in model.modules():  # running statistics other than (0, 1), so that folding does something
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    model.eval()
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.no_grad():
        before = model(images)
        folded = fold_batch_norm(model)
        after = model(images)
    assert folded >= 2 + 20  # the stages' conv + BN pairs, and the backbone's
    assert all(isinstance(s.box_head.convs[0][1], torch.nn.Identity) for s in model.roi_head.stages)
    for a, b in zip(before, after):
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def cascade_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("cascade"), **{
        "model.roi_head.cascade": "[0.5,0.6,0.7]", "model.roi_head.score_thresh": 0.0, "train.epochs": 1,
        "output.report": "false"})


def test_a_cascade_trains_saves_loads_and_predicts(cascade_run):
    from detkit.deploy.predictor import load_model

    records = [json.loads(line) for line in (cascade_run / "metrics.jsonl").read_text().splitlines()]
    logged = {k for r in records for k in r}
    assert {f"loss_roi_{kind}_s{t}" for kind in ("cls", "reg") for t in (1, 2, 3)} <= logged
    ckpt = torch.load(cascade_run / "last.pt", map_location="cpu", weights_only=False)
    assert any(k.startswith("roi_head.stages.2.predictor") for k in ckpt["model"])
    predictor = load_model(str(cascade_run / "last.pt"), log=lambda *_: None)
    assert isinstance(predictor.model.roi_head, CascadeRoIHead)
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    found = predictor.predict(image)
    assert found["boxes"].shape[1] == 4 and len(found["boxes"]) > 0
    assert np.isfinite(found["boxes"]).all() and (found["boxes"][:, 2:] >= found["boxes"][:, :2]).all()
    assert ((found["boxes"][:, 0::2] >= 0) & (found["boxes"][:, 0::2] <= 80)).all()
    # flip test-time augmentation runs through every stage
    flipped = load_model(str(cascade_run / "last.pt"), overrides=["model.test_hflip=true"], log=lambda *_: None)
    assert flipped.model.test_hflip and len(flipped.predict(image)["boxes"]) > 0


def test_export_refuses_a_cascade_naming_the_key(cascade_run):
    from detkit.deploy.export import build_export_model
    from detkit.deploy.export_graph import ExportableDetector
    from detkit.deploy.predictor import load_model
    from detkit.errors import ExportError

    with pytest.raises(ExportError, match=r"cascade model \(model.roi_head.cascade = \[0.5, 0.6, 0.7\]\).*train one "
                                          r"without model.roi_head.cascade"):
        build_export_model(str(cascade_run / "last.pt"), log=lambda *_: None)
    model = load_model(str(cascade_run / "last.pt"), log=lambda *_: None).model
    with pytest.raises(ValueError, match="model.roi_head.cascade"):
        ExportableDetector(model, min_size=64, max_size=64)
