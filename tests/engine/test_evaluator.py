"""Tests of detkit/evaluation/evaluator.py against a direct pycocotools run and hand-computed VOC AP."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.evaluation.evaluator import (
    COCO_METRIC_NAMES,
    build_coco_ground_truth,
    coco_evaluate,
    detections_to_coco_results,
    evaluate_detections,
    voc_evaluate,
)

CLASSES = ["cat", "dog", "bird"]
CATEGORY_IDS = [3, 7, 11]  # non-contiguous on purpose: labels 1..3 must map back to these


def random_problem(seed, num_images=12):
    rng = np.random.default_rng(seed)
    annotations, detections = [], []
    for i in range(num_images):
        n = int(rng.integers(0, 6))
        xy = rng.uniform(0, 200, (n, 2))
        wh = rng.uniform(8, 90, (n, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, 300)], 1).astype(np.float32)
        labels = rng.integers(1, 4, n).astype(np.int64)
        ignore = np.array([[250, 250, 290, 290]], np.float32) if i % 4 == 0 else np.zeros((0, 4), np.float32)
        annotations.append({"boxes": boxes, "labels": labels, "ignore_boxes": ignore, "image_id": 100 + i,
                            "orig_size": (300, 300), "file_name": f"img{i}.jpg"})
        # detections: jittered copies of the truth with random scores, some wrong labels, some clutter
        jitter = rng.normal(0, 6, boxes.shape).astype(np.float32)
        det_boxes = np.concatenate([boxes + jitter, rng.uniform(0, 250, (3, 2)).repeat(2, 1)
                                    + np.array([0, 0, 30, 30], np.float32)]).astype(np.float32)
        det_labels = np.concatenate([np.where(rng.random(n) < 0.8, labels, rng.integers(1, 4, n)),
                                     rng.integers(1, 4, 3)])
        if i % 4 == 0:  # a detection on the ignore region
            det_boxes = np.concatenate([det_boxes, [[252, 251, 289, 288]]]).astype(np.float32)
            det_labels = np.concatenate([det_labels, [2]])
        detections.append({"boxes": torch.from_numpy(det_boxes), "labels": torch.from_numpy(det_labels),
                           "scores": torch.from_numpy(rng.random(len(det_boxes)).astype(np.float32))})
    return annotations, detections


def direct_pycocotools(tmp_path, annotations, results):
    """Write the ground truth as a COCO JSON file and run pycocotools the way its README does."""
    gt = {"images": [], "annotations": [], "categories": [{"id": c, "name": n} for c, n in zip(CATEGORY_IDS, CLASSES)]}
    for ann in annotations:
        gt["images"].append({"id": ann["image_id"], "height": 300, "width": 300})
        for box, label in zip(ann["boxes"], ann["labels"]):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": ann["image_id"],
                                      "category_id": CATEGORY_IDS[label - 1],
                                      "bbox": [float(box[0]), float(box[1]), w, h],
                                      "area": w * h, "iscrowd": 0})
        for box in ann["ignore_boxes"]:
            for cat in CATEGORY_IDS:
                w, h = float(box[2] - box[0]), float(box[3] - box[1])
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": ann["image_id"],
                                          "category_id": cat, "bbox": [float(box[0]), float(box[1]), w, h],
                                          "area": w * h, "iscrowd": 1})
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(path))
        coco_dt = coco_gt.loadRes([{k: v for k, v in r.items() if k != "file_name"} for r in results])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coco_numbers_equal_direct_pycocotools(tmp_path, seed):
    annotations, detections = random_problem(seed)
    metrics, results = evaluate_detections(annotations, detections, CLASSES, CATEGORY_IDS)
    stats = direct_pycocotools(tmp_path, annotations, results)
    ours = [metrics["coco"][name] for name in COCO_METRIC_NAMES]
    np.testing.assert_allclose(ours, np.maximum(stats, 0), atol=1e-12)
    assert 0 < metrics["coco"]["AP50"] < 1


def test_results_map_labels_back_to_category_ids_and_xywh():
    det = [{"boxes": torch.tensor([[10.0, 20.0, 40.0, 60.0]]), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([3])}]
    results = detections_to_coco_results(det, [5], CATEGORY_IDS, ["a.jpg"])
    assert results == [{"image_id": 5, "category_id": 11, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.9,
                        "file_name": "a.jpg"}]


def test_perfect_detections_score_one_and_no_detections_score_zero():
    annotations, _ = random_problem(3)
    perfect = [{"boxes": torch.from_numpy(a["boxes"]), "labels": torch.from_numpy(a["labels"]),
                "scores": torch.linspace(1, 0.5, len(a["boxes"]))} for a in annotations]
    metrics, _ = evaluate_detections(annotations, perfect, CLASSES, CATEGORY_IDS)
    assert metrics["coco"]["mAP"] == pytest.approx(1.0)
    assert metrics["voc"]["mAP50_area"] == pytest.approx(1.0)
    assert metrics["voc"]["mAP50_11pt"] == pytest.approx(1.0)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}
             for _ in annotations]
    metrics, results = evaluate_detections(annotations, empty, CLASSES, CATEGORY_IDS)
    assert results == [] and metrics["coco"]["mAP"] == 0.0 and metrics["voc"]["mAP50_area"] == 0.0


def test_voc_ap_hand_computed():
    # one image, two cats; detections: TP (0.9), FP (0.8), TP (0.7) -> precision 1, 1/2, 2/3 at recall .5, .5, 1
    ann = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), "labels": np.array([1, 1]),
            "ignore_boxes": np.array([[50, 50, 60, 60]], np.float32), "image_id": 1, "orig_size": (100, 100)}]
    det = [{"boxes": torch.tensor([[0, 0, 10, 10], [70, 70, 80, 80], [20, 20, 30, 30], [50, 50, 60, 60.0]]),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.95]), "labels": torch.tensor([1, 1, 1, 1])}]
    voc = voc_evaluate(ann, det, ["cat"])
    # the 0.95 detection lies on the ignore region: neither TP nor FP
    assert voc["per_class"]["cat"]["AP50_area"] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))
    expected_11 = (6 * 1.0 + 5 * (2 / 3)) / 11
    assert voc["per_class"]["cat"]["AP50_11pt"] == pytest.approx(expected_11)


def test_duplicate_detection_is_false_positive():
    ann = [{"boxes": np.array([[0, 0, 10, 10]], np.float32), "labels": np.array([1]),
            "ignore_boxes": np.zeros((0, 4), np.float32), "image_id": 1, "orig_size": (20, 20)}]
    det = [{"boxes": torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10.0]]), "scores": torch.tensor([0.9, 0.8]),
            "labels": torch.tensor([1, 1])}]
    voc = voc_evaluate(ann, det, ["cat"])
    assert voc["per_class"]["cat"]["AP50_area"] == pytest.approx(1.0)  # the FP comes after full recall
    gt = build_coco_ground_truth(ann, ["cat"], [1])
    metrics = coco_evaluate(gt, detections_to_coco_results(det, [1], [1]), ["cat"])
    assert metrics["coco"]["AP50"] == pytest.approx(1.0)


def test_confusion_matrix_counts_hits_confusions_misses_and_false_detections():
    from detkit.evaluation.evaluator import confusion_matrix
    ann = [{"boxes": np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32),
            "labels": np.array([1, 2, 2]), "ignore_boxes": np.array([[80, 80, 90, 90]], np.float32)}]
    det = [{"boxes": torch.tensor([[0, 0, 10, 10], [20, 20, 30, 31], [60, 60, 70, 70], [80, 80, 90, 90],
                                   [0, 0, 10, 10.0]]),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.9, 0.1]), "labels": torch.tensor([1, 1, 2, 1, 2])}]
    m = confusion_matrix(ann, det, num_classes=2)
    expected = np.zeros((3, 3), np.int64)
    expected[1, 1] = 1  # cat found
    expected[2, 1] = 1  # dog called cat
    expected[2, 0] = 1  # dog missed
    expected[0, 2] = 1  # a dog where there is nothing
    np.testing.assert_array_equal(m, expected)
