"""Test-time views (detkit/modeling/tta.py): flip and scale test-time augmentation, per proposal."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms as tv_batched_nms

from detkit.config import load_config
from detkit.errors import ConfigError
from detkit.modeling.detector import build_detector
from detkit.modeling.tta import View, ViewBatch, average, mirror_boxes, tta_views
from tests.modeling.test_cascade_head import IMAGE, features, integer_boxes, single_head_and_its_two_stage_copy
from tests.modeling.test_detector import K, light_config, synthetic_images


def test_views_put_the_base_view_first_and_need_scale_one():
    assert tta_views([1.0], False) == [View(1.0, False)]
    assert tta_views([1.25, 1.0], True) == [View(1.0, False), View(1.0, True), View(1.25, False), View(1.25, True)]
    with pytest.raises(ValueError, match="must include 1.0"):
        tta_views([0.8, 1.2], False)


def test_view_batch_maps_boxes_there_and_back():
    boxes = [integer_boxes(7, 0), integer_boxes(0, 1), integer_boxes(5, 2)]
    base = [(96, 128), (64, 80), (90, 70)]
    for scale in (0.75, 1.0, 4 / 3):
        sizes = [(round(h * scale), round(w * scale)) for h, w in base]
        for flip in (False, True):
            view = ViewBatch({}, sizes, base, flip=flip)
            assert view.identity == (scale == 1.0 and not flip)
            there = view.to_view(boxes)
            for b, t, (h, w), (vh, vw) in zip(boxes, there, base, sizes):
                expected = b * torch.tensor([vw / w, vh / h, vw / w, vh / h])
                torch.testing.assert_close(t, mirror_boxes(expected, vw) if flip else expected)
            for b, back in zip(boxes, view.from_view(there)):
                torch.testing.assert_close(back, b)


def test_average_of_two_is_their_half_sum_bit_for_bit():
    a, b = torch.randn(50, 4), torch.randn(50, 4)
    assert torch.equal(average([a, b]), (a + b) / 2)
    assert average([a]) is a


def _reference(model, img, views):
    """One image's detections with per-proposal averaging over ``views`` ((scale, flip) pairs), built from
    separate single-image passes of each view (resize, then mirror) with the single RoI head's parts."""
    head = model.roi_head
    h, w = img.shape[1:]
    base = model.backbone(model.preprocess([img])[0])
    props = model.rpn(list(base.values()), [(h, w)], None)[0][0]
    probs, boxes = [], []
    for scale, flip in views:
        vh, vw = round(h * scale), round(w * scale)
        view_img = img if scale == 1.0 else F.interpolate(img[None], size=(vh, vw), mode="bilinear",
                                                          align_corners=False, antialias=scale < 1)[0]
        factors = torch.tensor([vw / w, vh / h, vw / w, vh / h])
        view_props = props * factors
        if flip:
            view_img, view_props = view_img.flip(-1), mirror_boxes(view_props, vw)
        feats = model.backbone(model.preprocess([view_img])[0])
        logits, deltas = head.predictor(head.box_head(head.roi_pool(feats, [view_props])))
        probs.append(F.softmax(logits, -1))
        decoded = head.box_coder.decode(deltas.reshape(-1, 4), view_props.repeat_interleave(K, 0))
        boxes.append((mirror_boxes(decoded, vw) if flip else decoded) / factors)
    scores = (sum(probs) / len(views))[:, 1:]  # (R, K)
    b = (sum(boxes) / len(views)).view(props.shape[0], K, 4)
    rows, cols = torch.nonzero(scores > head.score_thresh, as_tuple=True)
    b, s, lab = b[rows, cols], scores[rows, cols], cols + 1
    b[:, 0::2] = b[:, 0::2].clamp(0, w)
    b[:, 1::2] = b[:, 1::2].clamp(0, h)
    big = ((b[:, 2] - b[:, 0]) >= head.min_size) & ((b[:, 3] - b[:, 1]) >= head.min_size)
    b, s, lab = b[big], s[big], lab[big]
    keep = tv_batched_nms(b, s, lab, head.nms_thresh)[: head.detections_per_img]
    return b[keep], s[keep], lab[keep]


def _tta_model(scales, hflip):
    torch.manual_seed(0)
    cfg = light_config("fpn")
    cfg.model.test_scales, cfg.model.test_hflip = scales, hflip
    return build_detector(cfg, K).eval()


@pytest.mark.parametrize("scales, hflip, widths", [
    ([1.0, 4 / 3], True, (96, 80)),  # two images of other widths (each mirrors about its own), padded alike
    ([0.75, 1.0], False, (96,)),  # a smaller view (antialiased resize)
])
def test_scale_tta_averages_each_proposal_over_every_view(scales, hflip, widths):
    model = _tta_model(scales, hflip)
    assert model.test_scales == (1.0,) + tuple(s for s in scales if s != 1.0)
    images, targets = synthetic_images(len(widths), size=96, seed=3)
    images = [img[:, :, :w].contiguous() for img, w in zip(images, widths)]
    for t, w in zip(targets, widths):
        t["boxes"][:, 0::2] = t["boxes"][:, 0::2].clamp(max=w)
    views = [(v.scale, v.flip) for v in tta_views(scales, hflip)]
    with torch.no_grad():
        tta = model(images)
        for img, det in zip(images, tta):
            boxes, scores, labels = _reference(model, img, views)
            assert det["boxes"].shape[0] == boxes.shape[0] > 0
            torch.testing.assert_close(det["boxes"], boxes, atol=2e-3, rtol=1e-4)
            torch.testing.assert_close(det["scores"], scores, atol=1e-5, rtol=1e-4)
            assert torch.equal(det["labels"], labels)
        # with targets: the same detections, and the plain forward's losses
        with_losses, losses = model(images, targets)
        model.test_scales, model.test_hflip = (1.0,), False
        plain, plain_losses = model(images, targets)
    for a, b in zip(with_losses, tta):
        torch.testing.assert_close(a["boxes"], b["boxes"])
    for k in plain_losses:
        torch.testing.assert_close(losses[k], plain_losses[k], atol=1e-5, rtol=1e-4)
    assert any(a["boxes"].shape != p["boxes"].shape or not torch.allclose(a["boxes"], p["boxes"])
               for a, p in zip(tta, plain))


def test_scale_views_follow_the_models_own_resize():
    """data.test_resize = model: a view at scale s is the image resized to s x the test size."""
    cfg = light_config("fpn")
    cfg.data.test_resize, cfg.data.test_min_size, cfg.data.max_size = "model", 64, 200
    cfg.model.test_scales = [1.0, 1.5]
    model = build_detector(cfg, K).eval()
    img = synthetic_images(1, size=96, seed=1)[0][0][:, :, :80]
    _, base = model.preprocess([img])
    _, scaled = model.preprocess([img], view_scale=1.5)
    assert base == [(76, 64)] and scaled == [(115, 96)]  # 96 x 80 -> shorter side 64 -> 96
    with torch.no_grad():
        dets = model([img])
    assert dets[0]["boxes"].shape[0] > 0
    assert float(dets[0]["boxes"][:, 2].max()) <= 80 and float(dets[0]["boxes"][:, 3].max()) <= 96


def test_cascade_of_identical_stages_averages_views_as_the_single_head():
    """The cascade's view averaging (every stage, every view) equals the single head's when its two
    stages are the single head without regression: three views, one of them scaled and mirrored."""
    single, head = single_head_and_its_two_stage_copy()
    base = [IMAGE, IMAGE]
    scaled = [(IMAGE[0] * 2, IMAGE[1] * 2)] * 2
    big = {k: F.interpolate(f, scale_factor=2.0) for k, f in features(batch=2, seed=7).items()}
    views = [ViewBatch(features(batch=2), base, base), ViewBatch(features(batch=2, seed=3), base, base, flip=True),
             ViewBatch(big, scaled, base, flip=True)]
    props = [integer_boxes(40, 3), integer_boxes(25, 4)]
    with torch.no_grad():
        ours, theirs = head.postprocess_views(views, props, base), single.postprocess_views(views, props, base)
        one_view = single.postprocess_views(views[:1], props, base)
    for a, b in zip(ours, theirs):
        assert a["boxes"].shape[0] > 5
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-5)
    assert any(a["scores"].shape != b["scores"].shape or not torch.allclose(a["scores"], b["scores"])
               for a, b in zip(theirs, one_view))


@pytest.mark.parametrize("scales, match", [
    ([0.8, 1.2], "must include 1.0"), ([1.0, 1.0], "lists a scale twice"), ([1.0, 0.0], r"test_scales\[1\]"),
    ([], "at least one scale"), ([1.0, 5.0], r"in \(0, 4\]"),
])
def test_test_scales_config_errors_name_the_key(scales, match):
    with pytest.raises(ConfigError, match=match) as err:
        load_config(None, [f"model.test_scales={scales}"])
    assert "model.test_scales" in str(err.value)
