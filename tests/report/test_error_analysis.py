"""detkit.report.error_analysis: each detection's outcome by COCOeval's matching at IoU 0.5."""

import numpy as np
import pytest

from detkit.report.error_analysis import analyse_errors


def _ann(boxes, labels, image_id=1, ignore=None):
    return {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64),
            "ignore_boxes": np.asarray(ignore if ignore is not None else np.zeros((0, 4)), np.float32).reshape(-1, 4),
            "image_id": image_id, "orig_size": (400, 400), "file_name": f"img{image_id}.jpg"}


def _det(box, category, score, image_id=1):
    x1, y1, x2, y2 = box
    return {"image_id": image_id, "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}


def test_every_kind_of_outcome():
    ann = _ann([[10, 10, 50, 50], [100, 100, 150, 150], [200, 10, 260, 60]], [1, 1, 2], ignore=[[300, 300, 350, 350]])
    results = [_det([10, 10, 50, 50], 1, 0.9),      # takes object 0
               _det([11, 11, 50, 50], 1, 0.8),      # same object again
               _det([200, 10, 260, 60], 1, 0.7),    # on the class-2 object
               _det([100, 100, 130, 130], 1, 0.6),  # IoU 0.36 with object 1
               _det([350, 0, 399, 40], 1, 0.5),     # nothing there
               _det([300, 300, 350, 350], 2, 0.4)]  # on the ignore region
    (errors,) = analyse_errors([ann], results, ["a", "b"], [1, 2])
    assert errors.kinds == ["tp", "duplicate", "wrong_class", "localisation", "background", "ignored"]
    np.testing.assert_allclose(errors.gt_best_score, [0.9, 0.0, 0.0], atol=1e-6)
    counts = errors.counts(0.0)
    assert (counts["tp"], counts["missed"], counts["objects"]) == (1, 2, 3)
    assert errors.error_count(0.0) == 4 + 2


def test_threshold_cuts_detections_and_misses_what_they_found():
    ann = _ann([[10, 10, 50, 50]], [1])
    (errors,) = analyse_errors([ann], [_det([10, 10, 50, 50], 1, 0.2), _det([300, 300, 320, 320], 1, 0.1)], ["a"], [1])
    assert errors.counts(0.0)["tp"] == 1 and errors.counts(0.0)["missed"] == 0
    assert errors.counts(0.3) == {**errors.counts(0.3), "tp": 0, "background": 0, "missed": 1}
    assert errors.error_count(0.15) == 0 and errors.error_count(0.05) == 1


def test_matching_follows_score_order_and_category_ids():
    # Category ids that are not 1..K; the lower-scored detection first in the list.
    ann = _ann([[0, 0, 100, 100]], [1])
    results = [_det([0, 0, 98, 98], 17, 0.5), _det([0, 0, 100, 100], 17, 0.9), _det([0, 0, 100, 100], 99, 0.99)]
    (errors,) = analyse_errors([ann], results, ["a"], [17])
    assert errors.kinds == ["tp", "duplicate"]  # category 99 is not a class of the run: left out
    np.testing.assert_allclose(errors.scores, [0.9, 0.5])


def test_no_detections_and_no_objects():
    empty = _ann(np.zeros((0, 4)), [], image_id=2)
    full = _ann([[0, 0, 10, 10]], [1], image_id=3)
    first, second = analyse_errors([empty, full], [], ["a"], [1])
    assert first.counts(0.0)["objects"] == 0 and first.error_count(0.0) == 0
    assert second.missed(0.0).tolist() == [True]
    (only_fp,) = analyse_errors([empty], [_det([0, 0, 10, 10], 1, 0.5, image_id=2)], ["a"], [1])
    assert only_fp.kinds == ["background"]


def test_detections_past_cocoevals_hundred_are_not_evaluated():
    ann = _ann([[0, 0, 10, 10]], [1])
    results = [_det([200, 200, 210 + k, 210], 1, 0.9 - k * 0.001) for k in range(102)]
    (errors,) = analyse_errors([ann], results, ["a"], [1])
    assert errors.kinds.count("not_evaluated") == 2 and errors.kinds[-1] == "not_evaluated"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_true_positives_agree_with_an_independent_greedy_matcher(seed):
    """COCO's rule re-implemented plainly: by decreasing score, each detection takes the unmatched object
    of its class with the highest IoU >= 0.5."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (12, 2))
    gt = np.concatenate([xy, xy + rng.uniform(20, 80, (12, 2))], axis=1)
    gt_labels = rng.integers(1, 3, 12)
    det = gt[rng.integers(0, 12, 30)] + rng.normal(0, 8, (30, 4))
    det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
    det_labels, scores = rng.integers(1, 3, 30), rng.permutation(30) / 30 + 0.01
    (errors,) = analyse_errors([_ann(gt, gt_labels)], [_det(b, int(c), float(s)) for b, c, s in
                                                       zip(det, det_labels, scores)], ["a", "b"], [1, 2])
    taken, expected_tp = set(), 0
    for d in np.argsort(-scores, kind="stable"):
        x1 = np.maximum(det[d, 0], gt[:, 0]); y1 = np.maximum(det[d, 1], gt[:, 1])  # noqa: E702
        x2 = np.minimum(det[d, 2], gt[:, 2]); y2 = np.minimum(det[d, 3], gt[:, 3])  # noqa: E702
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        iou = inter / (area(det[d]) + area(gt) - inter)
        iou[(gt_labels != det_labels[d]) | np.isin(np.arange(12), list(taken))] = -1
        if iou.max() >= 0.5:
            taken.add(int(iou.argmax()))
            expected_tp += 1
    assert errors.kinds.count("tp") == expected_tp
    assert int((~errors.missed(0.0)).sum()) == len(taken)
