"""detkit/data/transforms.py: torchvision's resize rule, boxes stay on their pixels, validity, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detkit.config import DataConfig, config_from_dict
from detkit.data.transforms import build_transforms, resize_scale, resized_size


def _data_cfg(**data) -> DataConfig:
    return config_from_dict({"data": data}).data


def _sample(h=60, w=80, boxes=(), labels=None, ignore=(), image=None):
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return {"image": image if image is not None else np.zeros((h, w, 3), np.uint8), "boxes": boxes,
            "labels": np.array(labels if labels is not None else [1] * len(boxes), np.int64),
            "ignore_boxes": np.array(ignore, np.float32).reshape(-1, 4),
            "ignore_labels": np.ones(len(ignore), np.int64), "image_id": 1, "orig_size": (h, w), "file_name": "x"}


@pytest.mark.parametrize("size,min_size,max_size", [((480, 640), 320, 427), ((500, 375), 600, 1000),
                                                     ((100, 1000), 800, 1333), ((333, 517), 300, 500),
                                                     ((64, 64), 128, 128)])
def test_resize_matches_torchvision(size, min_size, max_size):
    h, w = size
    tv = GeneralizedRCNNTransform(min_size, max_size, [0.0] * 3, [1.0] * 3).eval()
    boxes = torch.tensor([[1.0, 2.0, w - 3.0, h - 1.0], [0.0, 0.0, w / 2, h / 3]])
    image = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    out, targets = tv([image], [{"boxes": boxes.clone(), "labels": torch.tensor([1, 1])}])
    sample = _sample(h, w, boxes.numpy(), image=(image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    res = build_transforms(_data_cfg(min_size=[min_size], max_size=max_size), train=False)(sample)
    assert res["image"].shape[:2] == tuple(out.image_sizes[0])
    assert resized_size(size, resize_scale(size, min_size, max_size)) == tuple(out.image_sizes[0])
    torch.testing.assert_close(torch.from_numpy(res["boxes"]), targets[0]["boxes"], rtol=0, atol=1e-4)
    ref = tv.resize(image, None)[0].permute(1, 2, 0).numpy() * 255  # torchvision's pixels (bilinear)
    assert np.abs(res["image"].astype(np.float64) - ref).mean() < 1.5
    assert res["scale"] == pytest.approx((out.image_sizes[0][0] / h, out.image_sizes[0][1] / w))


def _painted(rng, h, w, n):
    """An image with n non-overlapping boxes, each filled with its own colour on black."""
    image = np.zeros((h, w, 3), np.uint8)
    boxes, colours = [], []
    cells = rng.permutation(16)[:n]
    for k, cell in enumerate(cells):
        cx, cy = (cell % 4) * w / 4, (cell // 4) * h / 4
        x1, y1 = int(cx + rng.integers(1, 5)), int(cy + rng.integers(1, 5))
        x2, y2 = int(cx + w / 4 - rng.integers(1, 5)), int(cy + h / 4 - rng.integers(1, 5))
        colour = np.array([60 + 40 * (k % 5), 255 - 30 * k, 100 + 25 * (k // 2)], np.uint8)
        image[y1:y2, x1:x2] = colour
        boxes.append([x1, y1, x2, y2])
        colours.append(colour)
    return image, np.array(boxes, np.float32), colours


def _region(image, colour):
    """Extent of the pixels that are at least half `colour` (blended with black at the edges)."""
    pixels, c = image.astype(np.float64), colour.astype(np.float64)
    alpha = pixels @ c / (c @ c)  # (H, W) how much of the colour each pixel holds
    residual = np.linalg.norm(pixels - alpha[..., None] * c, axis=2)
    ys, xs = np.nonzero((alpha >= 0.5) & (residual < 20))
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_keeps_boxes_on_their_pixels(seed):
    rng = np.random.default_rng(seed)
    h, w = 120, 160
    image, boxes, colours = _painted(rng, h, w, 4)
    sample = _sample(h, w, boxes[:3], labels=[1, 2, 3], ignore=boxes[3:], image=image)
    cfg = _data_cfg(min_size=[96, 144], max_size=400,
                    augment={"hflip_prob": 0.5, "vflip_prob": 0.5, "crop_prob": 1.0, "scale_jitter": [0.7, 1.3],
                             "min_visibility": 0.0})
    out = build_transforms(cfg, train=True, seed=seed)(sample)
    assert out["labels"].tolist() == [1, 2, 3] and len(out["ignore_boxes"]) == 1
    for box, colour in zip(np.concatenate([out["boxes"], out["ignore_boxes"]]), colours):
        np.testing.assert_allclose(_region(out["image"], colour), box, atol=1.0)


def test_flips_fire_independently():
    cfg = _data_cfg(min_size=[60], max_size=200, augment={"hflip_prob": 0.5, "vflip_prob": 0.5})
    t = build_transforms(cfg, train=True)
    seen = set()
    for i in range(64):
        out = t(_sample(60, 80, [[0, 0, 10, 20]]), rng_seed=(0, 0, i))
        x1, y1 = out["boxes"][0, :2]
        seen.add((bool(x1 > 40), bool(y1 > 30)))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}


def _random_sample(rng):
    h, w = int(rng.integers(30, 200)), int(rng.integers(30, 200))
    n = int(rng.integers(0, 8))
    xy = rng.uniform(0, 1, size=(n, 2)) * [w, h]
    wh = rng.uniform(0.5, 1, size=(n, 2)) * rng.choice([1.0, 0.05], size=(n, 1)) * [w, h]
    boxes = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return _sample(h, w, boxes, labels=rng.integers(1, 4, len(boxes)), ignore=boxes[:1], image=image)


def test_train_preset_never_returns_bad_boxes():
    cfg = _data_cfg(min_size=[48, 64, 96], max_size=128,
                    augment={"hflip_prob": 0.5, "vflip_prob": 0.5, "crop_prob": 0.7, "scale_jitter": [0.5, 1.5],
                             "color_jitter_prob": 0.5})
    t = build_transforms(cfg, train=True, seed=0)
    rng = np.random.default_rng(0)
    for i in range(150):
        out = t(_random_sample(rng), rng_seed=(1, 0, i))
        h, w = out["image"].shape[:2]
        assert out["image"].dtype == np.uint8 and out["image"].shape[2] == 3
        for key, lkey in (("boxes", "labels"), ("ignore_boxes", "ignore_labels")):
            b = out[key]
            assert b.dtype == np.float32 and b.shape[1] == 4 and len(out[lkey]) == len(b)
            assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
            assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert out["labels"].dtype == np.int64


def test_determinism_under_a_seed():
    cfg = _data_cfg(min_size=[48, 64], max_size=128,
                    augment={"hflip_prob": 0.5, "crop_prob": 0.5, "scale_jitter": [0.8, 1.2], "color_jitter_prob": 0.5})
    samples = [_random_sample(np.random.default_rng(i)) for i in range(8)]

    def run(seed):
        t = build_transforms(cfg, train=True, seed=seed)
        return [t(s) for s in samples]  # the transform's own stream

    a, b, c = run(3), run(3), run(4)
    for x, y in zip(a, b):
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["boxes"], y["boxes"])
    assert any(x["image"].shape != z["image"].shape or not np.array_equal(x["image"], z["image"])
               for x, z in zip(a, c))
    t = build_transforms(cfg, train=True, seed=0)  # per-sample seeds do not depend on call order
    first = [t(s, rng_seed=(5, 1, i)) for i, s in enumerate(samples)]
    again = [t(s, rng_seed=(5, 1, i)) for i, s in reversed(list(enumerate(samples)))][::-1]
    for x, y in zip(first, again):
        assert np.array_equal(x["image"], y["image"]) and np.array_equal(x["boxes"], y["boxes"])


def test_multi_scale_training_and_test_size():
    cfg = _data_cfg(min_size=[32, 48, 64], max_size=1000, test_min_size=40)
    t = build_transforms(cfg, train=True)
    shorter = {min(t(_sample(100, 150), rng_seed=i)["image"].shape[:2]) for i in range(30)}
    assert shorter == {32, 48, 64}
    assert min(build_transforms(cfg, train=False)(_sample(100, 150))["image"].shape[:2]) == 40
    assert min(build_transforms(_data_cfg(min_size=[32, 48]), train=False)(_sample(100, 150))["image"].shape[:2]) == 48


def test_input_sample_not_modified():
    s = _sample(60, 80, [[1, 2, 30, 40]])
    before = s["boxes"].copy()
    build_transforms(_data_cfg(min_size=[120], max_size=400, augment={"hflip_prob": 1.0}), train=True)(s)
    assert np.array_equal(s["boxes"], before) and s["image"].shape == (60, 80, 3)
