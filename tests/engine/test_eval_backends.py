"""eval.backend: faster-coco-eval gives pycocotools' numbers (to 1e-6) on BCCD, the synthetic set, a
COCO-scale-shaped set, and sets with crowd regions and empty images; the vectorised VOC matcher and
confusion matrix equal the per-detection versions they replaced (tests/engine/eval_reference.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from benchmarks.scale_data import make_coco, make_detections
from detkit.data.coco import COCODataset
from detkit.data.synthetic import prepare_synthetic
from detkit.data.voc import VOCDataset
from detkit.evaluation.evaluator import (
    EVAL_BACKENDS,
    build_coco_ground_truth,
    coco_evaluate,
    confusion_matrix,
    detections_to_coco_results,
    evaluate_detections,
    voc_evaluate,
)
from tests.data.data_helpers import BCCD, tiny_synthetic_config
from tests.engine.eval_reference import reference_confusion_matrix, reference_voc_evaluate


def _random_set(seed: int, num_images: int = 60, num_classes: int = 5, labelled_ignore: bool = True):
    """Annotations with crowd / ignore regions and empty images, and detections (some exact, some on
    ignore regions, equal scores) aligned with them."""
    rng = np.random.default_rng(seed)
    anns = []
    for i in range(num_images):
        n = 0 if rng.random() < 0.2 else int(rng.integers(1, 12))
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(3, 200, (n, 2))], 1).astype(np.float32)
        g = int(rng.integers(0, 3))
        gxy = rng.uniform(0, 300, (g, 2))
        ann = {"boxes": boxes, "labels": rng.integers(1, num_classes + 1, n), "image_id": 10 * i + 3,
               "ignore_boxes": np.concatenate([gxy, gxy + 80], 1).astype(np.float32), "orig_size": (520, 540),
               "file_name": f"{i}.jpg"}
        if labelled_ignore:
            ann["ignore_labels"] = rng.integers(1, num_classes + 1, g)
        anns.append(ann)
    dets = make_detections(anns, num_classes, per_image=int(rng.integers(5, 40)), seed=seed)
    for ann, det in zip(anns, dets):
        if len(ann["ignore_boxes"]):
            det["boxes"][0] = ann["ignore_boxes"][0]  # a detection exactly on an ignore region
        det["scores"][1::3] = det["scores"][0]  # ties
    if num_images > 3:
        dets[3] = {k: v[:0] for k, v in dets[3].items()}  # an image without detections
    return anns, dets


def _coco_numbers_equal(anns, dets, classes, category_ids):
    gt = build_coco_ground_truth(anns, classes, category_ids)
    results = detections_to_coco_results(dets, [a["image_id"] for a in anns], category_ids)
    ref, fast = (coco_evaluate(gt, results, classes, backend=b) for b in EVAL_BACKENDS)
    for key, value in ref["coco"].items():
        assert fast["coco"][key] == pytest.approx(value, abs=1e-6), key
    for name in classes:
        assert fast["per_class"][name] == pytest.approx(ref["per_class"][name], abs=1e-6)
        np.testing.assert_allclose(fast["pr_curves"][name], ref["pr_curves"][name], atol=1e-6)
    return ref


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("labelled_ignore", [True, False])
def test_faster_backend_equals_pycocotools_with_crowd_and_empty_images(seed, labelled_ignore):
    anns, dets = _random_set(seed, labelled_ignore=labelled_ignore)
    ref = _coco_numbers_equal(anns, dets, [f"c{k}" for k in range(5)], [1, 3, 7, 8, 20])
    assert 0 < ref["coco"]["mAP"] < 1


def test_faster_backend_equals_pycocotools_on_bccd():
    if not BCCD.is_dir():
        pytest.skip("BCCD is not here")
    ds = VOCDataset(roots=[BCCD], splits=["val"], log_report=False)
    anns = [ds.get_annotation(i) for i in range(len(ds))]
    _coco_numbers_equal(anns, make_detections(anns, len(ds.classes), per_image=50, seed=2), ds.classes,
                        ds.category_ids)


def test_faster_backend_equals_pycocotools_on_synthetic_and_coco_scale_sets(tmp_path):
    cfg = tiny_synthetic_config(tmp_path, num_train=4, num_val=30)
    ann_file, img_dir = prepare_synthetic(cfg.data.synthetic, None)["val"]
    gen_file, gen_dir = make_coco(str(tmp_path / "gen"), num_images=400, seed=7)
    for ann_file, img_dir in ((ann_file, img_dir), (gen_file, gen_dir)):
        ds = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False)
        anns = [ds.get_annotation(i) for i in range(len(ds))]
        _coco_numbers_equal(anns, make_detections(anns, len(ds.classes), per_image=100, seed=3), ds.classes,
                            ds.category_ids)


def test_empty_results_give_zeros_with_both_backends():
    anns, dets = _random_set(0, num_images=4)
    gt = build_coco_ground_truth(anns, ["a", "b", "c", "d", "e"], [1, 2, 3, 4, 5])
    for backend in EVAL_BACKENDS:
        assert coco_evaluate(gt, [], ["a", "b", "c", "d", "e"], backend=backend)["coco"]["mAP"] == 0.0
    with pytest.raises(ValueError, match="backend"):
        coco_evaluate(gt, [], ["a"], backend="fast")


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_voc_and_confusion_equal_the_per_detection_versions(seed):
    anns, dets = _random_set(seed, labelled_ignore=seed % 2 == 0)
    classes = [f"c{k}" for k in range(5)]
    for thr in (0.5, 0.7):
        assert voc_evaluate(anns, dets, classes, thr) == reference_voc_evaluate(anns, dets, classes, thr)
    np.testing.assert_array_equal(confusion_matrix(anns, dets, 5), reference_confusion_matrix(anns, dets, 5))


def test_evaluate_detections_agrees_across_backends():
    anns, dets = _random_set(9)
    classes, ids = [f"c{k}" for k in range(5)], [1, 2, 3, 4, 5]
    (a, results_a), (b, results_b) = (evaluate_detections(anns, dets, classes, ids, backend=k) for k in EVAL_BACKENDS)
    assert results_a == results_b and a["voc"] == b["voc"] and a["confusion_matrix"] == b["confusion_matrix"]
    assert a["coco"] == pytest.approx(b["coco"], abs=1e-6)


def test_faster_backend_without_its_package_names_the_key(monkeypatch):
    from detkit.errors import ConfigError

    anns, dets = _random_set(0, num_images=3)
    classes, category_ids = [f"c{k}" for k in range(5)], [1, 3, 7, 8, 20]
    gt = build_coco_ground_truth(anns, classes, category_ids)
    results = detections_to_coco_results(dets, [a["image_id"] for a in anns], category_ids)
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # import faster_coco_eval -> ImportError
    with pytest.raises(ConfigError, match=r"eval.backend.*pycocotools"):
        coco_evaluate(gt, results, classes, backend="faster")
    assert coco_evaluate(gt, results, classes, backend="pycocotools")["coco"]["mAP"] >= 0
