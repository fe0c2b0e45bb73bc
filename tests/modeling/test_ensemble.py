"""detkit/modeling/ensemble.py: detectors averaged per proposal at test time."""

import pytest
import torch

from detkit.modeling.detector import build_detector
from detkit.modeling.ensemble import DetectorEnsemble
from tests.modeling.test_detector import K, light_config, synthetic_images


def _detector(seed, *, hflip=False, scales=(1.0,), cascade=None, nms_method="hard", fc_dim=128):
    torch.manual_seed(seed)
    cfg = light_config("fpn")
    cfg.model.test_hflip, cfg.model.test_scales = hflip, list(scales)
    cfg.model.roi_head.cascade = cascade
    cfg.model.roi_head.nms_method = nms_method
    cfg.model.roi_head.fc_dim = fc_dim
    return build_detector(cfg, K).eval()


def _images():
    images, targets = synthetic_images(2, size=96, seed=5)
    images[1] = images[1][:, :, :80].contiguous()  # another width: padding and mirroring differ per image
    targets[1]["boxes"][:, 0::2] = targets[1]["boxes"][:, 0::2].clamp(max=80)
    return images, targets


def _assert_same_detections(ours, theirs):
    for a, b in zip(ours, theirs):
        assert a["boxes"].shape[0] == b["boxes"].shape[0] > 0
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=1e-4)
        assert torch.equal(a["labels"], b["labels"])


@pytest.mark.parametrize("kwargs", [{}, {"hflip": True, "scales": (1.0, 0.8)}, {"cascade": [0.5, 0.6]}])
def test_an_ensemble_of_one_is_its_member(kwargs):
    model = _detector(0, **kwargs)
    images, targets = _images()
    with torch.no_grad():
        _assert_same_detections(DetectorEnsemble([model])(images), model(images))
        ours, our_losses = DetectorEnsemble([model])(images, targets)
        theirs, their_losses = model(images, targets)
    _assert_same_detections(ours, theirs)
    assert our_losses.keys() == their_losses.keys()
    for k in our_losses:
        torch.testing.assert_close(our_losses[k], their_losses[k])


def test_two_copies_of_a_detector_give_its_detections_under_hard_nms():
    """Every proposal comes twice with the same averaged prediction; hard NMS removes the copies."""
    model = _detector(0, hflip=True)
    images, _ = _images()
    with torch.no_grad():
        _assert_same_detections(DetectorEnsemble([model, model])(images), model(images))


def test_members_average_their_predictions_on_every_members_proposals():
    a, b = _detector(0, hflip=True), _detector(1)
    images, _ = _images()
    ensemble = DetectorEnsemble([a, b])
    with torch.no_grad():
        views_a, sizes = a.view_batches(images)
        views_b, _ = b.view_batches(images)
        props_a = a.rpn(list(views_a[0].features.values()), sizes, None)[0]
        props_b = b.rpn(list(views_b[0].features.values()), sizes, None)[0]
        pooled = [torch.cat((pa, pb)) for pa, pb in zip(props_a, props_b)]
        sa, ba = a.roi_head.predict_views(views_a, pooled, sizes)
        sb, bb = b.roi_head.predict_views(views_b, pooled, sizes)
        scores, boxes = ensemble.predict([views_a, views_b], pooled, sizes)
        torch.testing.assert_close(scores, (sa + sb) / 2)
        torch.testing.assert_close(boxes, (ba + bb) / 2)
        detections = ensemble(images)
        expected = a.roi_head.select(scores, boxes, [p.shape[0] for p in pooled], sizes)
        own_a, own_b = a(images), b(images)
    _assert_same_detections(detections, expected)
    for det, da, db in zip(detections, own_a, own_b):  # neither member's own answer
        for other in (da, db):
            assert det["boxes"].shape != other["boxes"].shape or not torch.allclose(det["boxes"], other["boxes"])


def test_a_cascade_member_lends_its_one_box_per_roi_to_every_class():
    single, cascade = _detector(0), _detector(2, cascade=[0.5, 0.6, 0.7])
    images, targets = _images()
    with torch.no_grad():
        views_s, sizes = single.view_batches(images)
        views_c, _ = cascade.view_batches(images)
        props = single.rpn(list(views_s[0].features.values()), sizes, None)[0]
        _, boxes_s = single.roi_head.predict_views(views_s, props, sizes)
        _, boxes_c = cascade.roi_head.predict_views(views_c, props, sizes)
        assert boxes_s.shape[1:] == (K, 4) and boxes_c.shape[1:] == (1, 4)
        _, boxes = DetectorEnsemble([single, cascade]).predict([views_s, views_c], props, sizes)
        torch.testing.assert_close(boxes, (boxes_s + boxes_c) / 2)
        detections, losses = DetectorEnsemble([single, cascade])(images, targets)
    assert all(d["boxes"].shape[0] > 0 for d in detections)
    # each loss averaged over the members that have it: the cascade's stage losses are its own
    _, cascade_losses = cascade(images, targets)
    _, single_losses = single(images, targets)
    torch.testing.assert_close(losses["loss_roi_cls_s2"], cascade_losses["loss_roi_cls_s2"])
    rpn_mean = (single_losses["loss_rpn_cls"] + cascade_losses["loss_rpn_cls"]) / 2
    torch.testing.assert_close(losses["loss_rpn_cls"], rpn_mean)


def test_members_must_share_classes_and_stay_in_eval():
    torch.manual_seed(0)
    other = build_detector(light_config("fpn"), K + 1).eval()
    with pytest.raises(ValueError, match="member 2 has 3 classes, member 1 has 2"):
        DetectorEnsemble([_detector(0), other])
    with pytest.raises(ValueError, match="at least one"):
        DetectorEnsemble([])
    ensemble = DetectorEnsemble([_detector(0)])
    with pytest.raises(ValueError, match="train its members one by one"):
        ensemble.train()
    assert not ensemble.training
