"""detkit/data/resized_boxes.py: the training boxes after the training resize, as anchor fitting sees them."""

from __future__ import annotations

import numpy as np
from data_helpers import tiny_synthetic_config

from detkit.config import config_from_dict
from detkit.data.formats import build_dataset
from detkit.data.resized_boxes import resized_annotations


def _box_shapes(entries) -> np.ndarray:
    """(N, 2) float32 (w, h) of the boxes of resized_annotations' entries."""
    boxes = [e["boxes"] for e in entries if len(e["boxes"])]
    if not boxes:
        return np.zeros((0, 2), np.float32)
    allb = np.concatenate(boxes)
    return np.stack([allb[:, 2] - allb[:, 0], allb[:, 3] - allb[:, 1]], axis=1).astype(np.float32)


def test_resized_boxes_for_anchor_fitting(tmp_path):
    cfg = tiny_synthetic_config(tmp_path / "cache")
    ds = build_dataset(cfg, "train")
    entries = resized_annotations(ds, cfg.data, min_size=[32, 128], max_size=1000)
    assert len(entries) == 2 * len(ds) and {e["size"] for e in entries} == {(32, 32), (128, 128)}
    shapes = _box_shapes(resized_annotations(ds, cfg.data, min_size=128, max_size=1000))
    wh = np.concatenate([ds.get_annotation(i)["boxes"] for i in range(len(ds))])
    np.testing.assert_allclose(shapes, 2 * (wh[:, 2:] - wh[:, :2]), rtol=1e-6)


def test_bccd_box_shapes_at_480(bccd_root):
    cfg = config_from_dict({"data": {"format": "voc", "train": {"roots": [str(bccd_root)], "splits": ["train"]},
                                     "val": {"roots": [str(bccd_root)], "splits": ["test"]},
                                     "min_size": [480], "max_size": 640}})
    ds = build_dataset(cfg, "train", log_report=False)
    shapes = _box_shapes(resized_annotations(ds, cfg.data))
    assert shapes.shape == (2804, 2) and (shapes > 0).all()  # 205 images at scale 1 (docs/anchors.md)
    small = _box_shapes(resized_annotations(ds, cfg.data, min_size=320, max_size=427))
    np.testing.assert_allclose(small[:, 1], shapes[:, 1] * 320 / 480, rtol=1e-5)
