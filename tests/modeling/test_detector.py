"""Detector: the torchvision-style contract, batching/normalisation, negatives, eval boxes, overfitting."""

import contextlib
import io

import numpy as np
import pytest
import torch

from detkit.config import Config
from detkit.errors import ConfigError
from detkit.modeling.detector import Detector, build_detector

K = 2


def light_config(features="c4"):
    """A small but complete detector: the same code path, CPU-friendly sizes."""
    cfg = Config()
    cfg.model.backbone.features = features
    if features == "fpn":
        cfg.model.backbone.fpn_channels = 32
        cfg.model.anchors.sizes = [[16.0], [32.0], [64.0], [128.0], [256.0]]
    else:
        cfg.model.anchors.sizes = [[24.0, 48.0, 96.0]]
    cfg.model.rpn.pre_nms_top_n_train = cfg.model.rpn.post_nms_top_n_train = 300
    cfg.model.rpn.pre_nms_top_n_test = cfg.model.rpn.post_nms_top_n_test = 100
    cfg.model.roi_head.batch_size_per_image = 128
    cfg.model.roi_head.fc_dim = 128
    return cfg


def synthetic_images(n, size=128, seed=0):
    """Noise images with rectangles (class 1) and discs (class 2) painted on them."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(n):
        img = rng.uniform(0.35, 0.65, size=(3, size, size)).astype(np.float32)
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, 4))):
            for _attempt in range(20):
                side = rng.uniform(22, 50)
                x1, y1 = rng.uniform(2, size - side - 2, size=2)
                box = [x1, y1, x1 + side * rng.uniform(0.8, 1.2), y1 + side]
                apart = all(box[0] > b[2] or box[2] < b[0] or box[1] > b[3] or box[3] < b[1] for b in boxes)
                if box[2] < size and apart:
                    break
            label = int(rng.integers(1, K + 1))
            colour = rng.uniform(0, 1, size=(3, 1))
            if label == 1:
                mask = (xx >= box[0]) & (xx < box[2]) & (yy >= box[1]) & (yy < box[3])
            else:
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                rx, ry = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
                mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
            img[:, mask] = colour
            boxes.append(box)
            labels.append(label)
        images.append(torch.from_numpy(img))
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)})
    return images, targets


def coco_ap50(targets, detections):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (t, d) in enumerate(zip(targets, detections)):
        images.append({"id": i, "width": 128, "height": 128})
        for j, (b, lab) in enumerate(zip(t["boxes"].tolist(), t["labels"].tolist())):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": lab, "iscrowd": 0,
                                "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        for b, s, lab in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist()):
            results.append({"image_id": i, "category_id": lab, "score": s,
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations,
                      "categories": [{"id": c} for c in range(1, K + 1)]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[1]


@pytest.mark.parametrize("features", ["c4", "fpn"])
def test_training_and_eval_contract(features):
    torch.manual_seed(0)
    model = build_detector(light_config(features), K)
    images, targets = synthetic_images(2, size=96)
    images[1] = images[1][:, :80, :90]  # different sizes are batched inside
    targets[1]["boxes"] = targets[1]["boxes"].clamp(max=79)
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_reg", "loss_roi_cls", "loss_roi_reg"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        dets = model(images)
        dets2, val_losses = model(images, targets)
    assert len(dets) == 2 and set(val_losses) == set(losses)
    for d in dets:
        assert set(d) == {"boxes", "scores", "labels"}
        assert d["boxes"].shape == (d["scores"].shape[0], 4) and d["labels"].dtype == torch.int64
        assert torch.all((d["labels"] >= 1) & (d["labels"] <= K))
    for a, b in zip(dets, dets2):
        torch.testing.assert_close(a["boxes"], b["boxes"])


def test_fc_norm_from_config_trains_its_parameters():
    torch.manual_seed(0)
    cfg = light_config("fpn")
    cfg.model.roi_head.fc_norm = "ln"
    model = build_detector(cfg, K).train()
    norms = model.roi_head.box_head.norms
    assert norms is not None and all(isinstance(n, torch.nn.LayerNorm) for n in norms)
    images, targets = synthetic_images(2, size=96)
    sum(model(images, targets).values()).backward()
    assert all(n.weight.grad is not None and n.weight.grad.abs().sum() > 0 for n in norms)


def test_preprocess_normalises_and_pads():
    model = build_detector(light_config(), K)
    img = torch.rand(3, 50, 70)
    batch, sizes = model.preprocess([img, torch.rand(3, 64, 33)])
    assert batch.shape == (2, 3, 64, 96) and sizes == [(50, 70), (64, 33)]
    mean = torch.tensor(Config().model.pixel_mean).view(3, 1, 1)
    std = torch.tensor(Config().model.pixel_std).view(3, 1, 1)
    torch.testing.assert_close(batch[0, :, :50, :70], (img - mean) / std)
    assert torch.all(batch[0, :, 50:] == 0) and torch.all(batch[1, :, :, 33:] == 0)


def test_eval_boxes_inside_original_images():
    torch.manual_seed(0)
    model = build_detector(light_config(), K).eval()
    images, _ = synthetic_images(2, size=96)
    orig = [(480, 640), (150, 120)]
    with torch.no_grad():
        plain = model(images)
        dets = model(images, orig_sizes=orig)
    for d, p, (h, w) in zip(dets, plain, orig):
        assert d["boxes"].shape[0] > 0
        assert torch.all(d["boxes"] >= 0)
        assert torch.all(d["boxes"][:, 0::2] <= w) and torch.all(d["boxes"][:, 1::2] <= h)
        scale = torch.tensor([w / 96, h / 96, w / 96, h / 96])
        torch.testing.assert_close(d["boxes"], p["boxes"] * scale)


def test_negative_images_train_without_nan():
    torch.manual_seed(0)
    model = build_detector(light_config(), K).train()
    images, _ = synthetic_images(2, size=96)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in images]
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    for _ in range(3):
        losses = model(images, empty)
        assert all(torch.isfinite(v) for v in losses.values())
        assert losses["loss_rpn_reg"].item() == 0.0 and losses["loss_roi_reg"].item() == 0.0
        opt.zero_grad()
        sum(losses.values()).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()


def test_target_and_input_errors():
    model = build_detector(light_config(), K).train()
    img = [torch.rand(3, 64, 64)]
    with pytest.raises(ValueError, match="targets"):
        model(img)
    with pytest.raises(ValueError, match=r"1\.\.2"):
        model(img, [{"boxes": torch.tensor([[1.0, 1, 20, 20]]), "labels": torch.tensor([3])}])
    with pytest.raises(ValueError, match="Tensor\\[3, H, W\\]"):
        model([torch.rand(64, 64)], [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])


def test_build_detector_anchor_sources():
    cfg = light_config()
    model = build_detector(cfg, K)
    assert model.rpn.anchor_generator.num_anchors_per_location == 9
    shapes = [[[20.0, 30.0], [40.0, 40.0]]]
    assert build_detector(cfg, K, anchor_shapes=shapes).rpn.head.cls_logits.out_channels == 2
    cfg.model.anchors.shapes = [[[10.0, 10.0]]]
    assert build_detector(cfg, K).rpn.anchor_generator.shapes.tolist() == [[[10.0, 10.0]]]
    with pytest.raises(ConfigError, match="levels"):
        build_detector(cfg, K, anchor_shapes=[[[1.0, 1.0]], [[2.0, 2.0]]])
    assert isinstance(build_detector(cfg, K), Detector)


def test_sampling_rng_state_round_trip():
    model = build_detector(light_config(), K)
    state = model.rng_state_dict()
    model.rpn.rng.generator.manual_seed(123)
    model.load_rng_state_dict(state)
    assert torch.equal(model.rpn.rng.generator.get_state(), state["rpn"]["state"])


@pytest.mark.slow
def test_overfits_four_synthetic_images():
    torch.manual_seed(0)
    cfg = light_config()
    model = build_detector(cfg, K)
    images, targets = synthetic_images(4, size=128, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    first = None
    model.train()
    for it in range(150):
        losses = model(images, targets)
        total = sum(losses.values())
        first = total.item() if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    model.train()
    final = sum(model(images, targets).values()).item()
    assert final <= 0.2 * first, (first, final)
    model.eval()
    with torch.no_grad():
        dets = model(images)
    assert coco_ap50(targets, dets) >= 0.9


def test_set_anchor_shapes_reaches_the_rpn_and_is_not_a_weight():
    from detkit.config import load_config
    from detkit.modeling.detector import build_detector

    cfg = load_config(None, ["model.backbone.features=c5", "model.anchors.sizes=[[32.0]]",
                             "model.anchors.ratios=[1.0]", "model.backbone.depth=18"])
    cfg.model.anchors.shapes = [[[32.0, 32.0]]]
    model = build_detector(cfg, num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.set_anchor_shapes([[[20.0, 40.0]]])
    assert model.rpn.anchor_generator.shapes_list() == [[[20.0, 40.0]]]
    assert before.keys() == model.state_dict().keys()  # shapes are configuration: checkpoints are unchanged


def test_hflip_tta_averages_each_proposal_over_both_views():
    """model.test_hflip: against a reference built from separate single-image passes of each view."""
    import torch.nn.functional as F
    from torchvision.ops import batched_nms as tv_batched_nms

    from detkit.modeling.roi_head import mirror_boxes

    torch.manual_seed(0)
    cfg = light_config("fpn")
    cfg.model.test_hflip = True
    model = build_detector(cfg, K).eval()
    assert model.test_hflip
    images, targets = synthetic_images(2, size=96, seed=3)
    images[1] = images[1][:, :, :80].contiguous()  # another width: each image mirrors about its own
    targets[1]["boxes"][:, 0::2] = targets[1]["boxes"][:, 0::2].clamp(max=80)
    head = model.roi_head
    with torch.no_grad():
        tta = model(images)
        for img, det in zip(images, tta):
            h, w = img.shape[1:]
            own = model.backbone(model.preprocess([img])[0])
            mirror = model.backbone(model.preprocess([img.flip(-1)])[0])
            props = model.rpn(list(own.values()), [(h, w)], None)[0][0]
            l0, d0 = head.predictor(head.box_head(head.roi_pool(own, [props])))
            l1, d1 = head.predictor(head.box_head(head.roi_pool(mirror, [mirror_boxes(props, w)])))
            scores = ((F.softmax(l0, -1) + F.softmax(l1, -1)) / 2)[:, 1:]  # (R, K)
            r = props.shape[0]
            b0 = head.box_coder.decode(d0.reshape(-1, 4), props.repeat_interleave(K, 0))
            mirrored = mirror_boxes(props, w).repeat_interleave(K, 0)
            b1 = mirror_boxes(head.box_coder.decode(d1.reshape(-1, 4), mirrored), w)
            boxes = ((b0 + b1) / 2).view(r, K, 4)
            rows, cols = torch.nonzero(scores > head.score_thresh, as_tuple=True)
            b, s, lab = boxes[rows, cols], scores[rows, cols], cols + 1
            b[:, 0::2] = b[:, 0::2].clamp(0, w)
            b[:, 1::2] = b[:, 1::2].clamp(0, h)
            big = ((b[:, 2] - b[:, 0]) >= head.min_size) & ((b[:, 3] - b[:, 1]) >= head.min_size)
            b, s, lab = b[big], s[big], lab[big]
            keep = tv_batched_nms(b, s, lab, head.nms_thresh)[: head.detections_per_img]
            assert det["boxes"].shape[0] == keep.shape[0] > 0
            torch.testing.assert_close(det["boxes"], b[keep], atol=1e-3, rtol=1e-4)
            torch.testing.assert_close(det["scores"], s[keep], atol=1e-5, rtol=1e-4)
            assert torch.equal(det["labels"], lab[keep])
        # with targets: the same detections, and the plain forward's losses
        with_losses, losses = model(images, targets)
        model.test_hflip = False
        plain_dets, plain_losses = model(images, targets)
    for a, b in zip(with_losses, tta):
        torch.testing.assert_close(a["boxes"], b["boxes"])
    assert set(losses) == set(plain_losses)
    for k in losses:
        torch.testing.assert_close(losses[k], plain_losses[k], atol=1e-5, rtol=1e-4)
    # the augmentation changes the detections (it is not a no-op)
    assert any(a["boxes"].shape != p["boxes"].shape or not torch.allclose(a["boxes"], p["boxes"])
               for a, p in zip(tta, plain_dets))
