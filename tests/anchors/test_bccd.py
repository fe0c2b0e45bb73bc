"""The anchor modes on real data: BCCD train at scale 1 (min side 480, max 640), 15 anchors on P2..P6.

docs/anchors.md's bar: kmeans and learned each beat manual by >= 0.1 mBIoU; grid R@0.7 >= 0.90 (kmeans)
and >= 0.95 (learned); learned anchors inside their bands, finite, never two of a level with
IoU_c > 0.95; the chosen shapes survive a config save / load unchanged. Skipped without BCCD.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from detkit.anchors.boxes import collect_training_boxes
from detkit.anchors.fit import assign_levels
from detkit.anchors.metrics import centred_best_iou, grid_best_iou, grid_offsets
from detkit.anchors.modes import run_anchor_modes
from detkit.anchors.setup import AnchorSetup
from detkit.config import load_config, save_config
from detkit.modeling.anchors import AnchorGenerator
from detkit.ops.boxes import centred_iou

REPO = Path(__file__).resolve().parents[2]
BCCD = REPO / ".." / "shared" / "data" / "BCCD"
STRIDES = [4, 8, 16, 32, 64]


@pytest.fixture(scope="module")
def bccd():
    if not (BCCD / "Annotations").is_dir():
        pytest.skip("../shared/data/BCCD is not present")
    from detkit.data.formats import build_dataset

    cfg = load_config(REPO / "configs" / "bccd_r18_fpn.yaml",
                      ["data.min_size=[480]", "data.max_size=640", f"data.train.roots=[{BCCD.resolve()}]",
                       f"data.val.roots=[{BCCD.resolve()}]"])
    setup = AnchorSetup.from_config(cfg)
    boxes = collect_training_boxes(build_dataset(cfg, "train", log_report=False), setup)
    results = run_anchor_modes(setup, boxes, log=lambda *_: None)
    return cfg, boxes, results


def test_bccd_kmeans_and_learned_beat_manual(bccd):
    _, boxes, results = bccd
    assert len(boxes) == 2804
    manual, kmeans, learned = (results[m].metrics for m in ("manual", "kmeans", "learned"))
    assert kmeans["mbiou"] >= manual["mbiou"] + 0.1
    assert learned["mbiou"] >= manual["mbiou"] + 0.1
    assert kmeans["recall@0.7"] >= 0.90
    assert learned["recall@0.7"] >= 0.95
    assert kmeans["recall@0.7"] > manual["recall@0.7"] and learned["recall@0.7"] > manual["recall@0.7"]
    assert results["kmeans"].fit.adopted and results["learned"].fit.adopted


def test_bccd_grid_never_above_centred(bccd):
    _, boxes, results = bccd
    offsets = grid_offsets(boxes, STRIDES)
    for res in results.values():
        assert (grid_best_iou(boxes.wh, offsets, res.shapes) <= centred_best_iou(boxes.wh, res.shapes)).all()


def test_bccd_learned_constraints(bccd):
    cfg, boxes, results = bccd
    shapes = results["learned"].shapes
    band = cfg.model.anchors.band
    assert np.isfinite(shapes).all() and (shapes > 0).all()
    populated = np.bincount(assign_levels(boxes.wh, STRIDES), minlength=5) >= shapes.shape[1]
    for level, stride in enumerate(STRIDES):
        pair = centred_iou(torch.as_tensor(shapes[level]), torch.as_tensor(shapes[level]))
        assert (pair.triu(diagonal=1) <= 0.95).all(), (level, shapes[level])
        if populated[level]:
            size = np.sqrt(shapes[level].prod(axis=1)) / stride
            assert ((size >= band[0] - 1e-9) & (size <= band[1] + 1e-9)).all(), (level, size)
            aspect = shapes[level, :, 1] / shapes[level, :, 0]
            assert ((aspect >= 1 / 8 - 1e-9) & (aspect <= 8 + 1e-9)).all()


def test_bccd_shapes_survive_config_round_trip(bccd, tmp_path):
    cfg, _, results = bccd
    for mode in ("kmeans", "learned"):
        shapes = [[[float(w), float(h)] for w, h in level] for level in results[mode].shapes]
        cfg.model.anchors.shapes = shapes
        save_config(cfg, tmp_path / f"{mode}.yaml")
        loaded = load_config(tmp_path / f"{mode}.yaml")
        assert loaded.model.anchors.shapes == shapes  # bit-exact floats
        sizes = [(120, 160), (60, 80), (30, 40), (15, 20), (8, 10)]
        before = AnchorGenerator(shapes=shapes, strides=STRIDES)(sizes)
        after = AnchorGenerator(shapes=loaded.model.anchors.shapes, strides=STRIDES)(sizes)
        for a, b in zip(before, after):
            assert torch.equal(a, b)
    cfg.model.anchors.shapes = None
