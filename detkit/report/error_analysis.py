"""What each detection is, by the evaluation's own matching: true positive, or which kind of error.

The matching is COCOeval's (pycocotools, the one behind every mAP detkit reports) at IoU 0.5, all
areas, 100 detections per image and class: detections of a class by decreasing score, each to the
unmatched ground truth of highest IoU at or above 0.5; crowd / ignore regions neither reward nor
penalise. A detection left unmatched is a false positive, classified (after TIDE, Bolya et al. 2020) by
its overlap with the image's ground truth, in this order:

- ``duplicate``: IoU >= 0.5 with an object of its class that a higher-scoring detection already took;
- ``wrong_class``: IoU >= 0.5 with an object of another class;
- ``localisation``: IoU in [0.1, 0.5) with an object of its class (found, but the box is poor);
- ``background``: none of these (IoU < 0.1 with every object of its class).

A ground-truth object is ``missed`` at a score threshold when no true positive at or above the threshold
claims it. The greedy matching means a detection's outcome depends only on higher-scoring detections, so
cutting at any threshold gives the matching COCOeval would give to the detections above it.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np
import torch
from pycocotools.cocoeval import COCOeval

from detkit.evaluation.evaluator import build_coco_ground_truth
from detkit.ops.boxes import box_iou

__all__ = ["ERROR_KINDS", "DETECTION_KINDS", "ImageErrors", "analyse_errors"]

ERROR_KINDS = ("duplicate", "wrong_class", "localisation", "background")
# ``ignored``: on an ignore (crowd / difficult) region; ``not_evaluated``: past the 100 detections per
# image and class that COCOeval scores.
DETECTION_KINDS = ("tp",) + ERROR_KINDS + ("ignored", "not_evaluated")
MATCH_IOU = 0.5
BACKGROUND_IOU = 0.1


@dataclass
class ImageErrors:
    """One image's detections and ground truth, each with its outcome.

    Attributes:
        image_id, file_name: the image (as in the evaluation's ground truth).
        gt_boxes: float32 (G, 4) xyxy; gt_labels: int64 (G,) in 1..K; gt_best_score: float64 (G,), the
            score of the true positive that claims each object (0 when none does).
        ignore_boxes: float32 (I, 4) xyxy.
        boxes: float32 (D, 4) xyxy; scores: float32 (D,); labels: int64 (D,) in 1..K; kinds: D entries of
            :data:`DETECTION_KINDS`; best_iou: float32 (D,), the IoU with the object of its class it
            overlaps most (0 with none).
    """

    image_id: int
    file_name: str
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_best_score: np.ndarray
    ignore_boxes: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kinds: List[str] = field(default_factory=list)
    best_iou: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def shown(self, threshold: float) -> np.ndarray:
        """Indices of the detections scoring at least ``threshold``."""
        return np.flatnonzero(self.scores >= threshold)

    def missed(self, threshold: float) -> np.ndarray:
        """bool (G,): objects no true positive at or above ``threshold`` claims."""
        return self.gt_best_score < max(threshold, np.finfo(np.float32).tiny)

    def counts(self, threshold: float) -> Dict[str, int]:
        """Detections of each kind at or above ``threshold``, plus ``missed`` and ``objects``."""
        kinds = [self.kinds[d] for d in self.shown(threshold)]
        out = {kind: kinds.count(kind) for kind in DETECTION_KINDS}
        out["missed"] = int(self.missed(threshold).sum())
        out["objects"] = len(self.gt_labels)
        return out

    def error_count(self, threshold: float) -> int:
        """False positives at or above ``threshold`` plus missed objects: how wrong the image is."""
        counts = self.counts(threshold)
        return sum(counts[kind] for kind in ERROR_KINDS) + counts["missed"]


def _xywh_to_xyxy(xywh: Sequence[float]) -> List[float]:
    x, y, w, h = (float(v) for v in xywh)
    return [x, y, x + w, y + h]


def _coco_matching(coco_gt, results: list) -> tuple:
    """COCOeval's per-image matching at IoU 0.5 (all areas, 100 detections): (coco_dt, evalImgs)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.iouThrs = np.array([MATCH_IOU])
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0.0, 1e10]], ["all"]
        evaluator.params.maxDets = [100]
        evaluator.evaluate()
    return coco_dt, [e for e in evaluator.evalImgs if e is not None]


def _classify(box: torch.Tensor, label: int, gt_boxes: torch.Tensor, gt_labels: np.ndarray) -> tuple:
    """(kind, best same-class IoU) of an unmatched detection ``box`` (1, 4) against the image's objects."""
    if len(gt_boxes) == 0:
        return "background", 0.0
    iou = box_iou(box, gt_boxes)[0].numpy()
    same = gt_labels == label
    best_same = float(iou[same].max()) if same.any() else 0.0
    best_other = float(iou[~same].max()) if (~same).any() else 0.0
    if best_same >= MATCH_IOU:
        return "duplicate", best_same
    if best_other >= MATCH_IOU:
        return "wrong_class", best_same
    if best_same >= BACKGROUND_IOU:
        return "localisation", best_same
    return "background", best_same


def analyse_errors(annotations: Sequence[dict], results: Sequence[dict], classes: Sequence[str],
                   category_ids: Sequence[int]) -> List[ImageErrors]:
    """Every image's detections with their outcome and its objects with the score that finds them.

    Args:
        annotations: per image, as the evaluation reads them (``boxes`` (G, 4) xyxy, ``labels`` (G,) in
            1..K, ``ignore_boxes``, optional ``ignore_labels``, ``image_id``, ``orig_size``, ``file_name``).
        results: COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``), e.g. a run's
            detections.json; results of images not in ``annotations`` are left out.
        classes, category_ids: K names and the data set's category id of each (label k -> index k-1).
    Returns:
        one :class:`ImageErrors` per annotation, in the order of ``annotations``.
    """
    label_of = {int(c): k for k, c in enumerate(category_ids, start=1)}
    known = {int(a["image_id"]) for a in annotations}
    results = [{k: v for k, v in r.items() if k in ("image_id", "category_id", "bbox", "score")}
               for r in results if int(r["image_id"]) in known and int(r["category_id"]) in label_of]
    coco_gt = build_coco_ground_truth(annotations, classes, category_ids)
    outcome: Dict[int, str] = {}  # detection id -> tp / ignored / fp, for the detections COCOeval scored
    claimed_by: Dict[int, int] = {}  # ground-truth id -> the detection id that claims it
    coco_dt = None
    if results:
        coco_dt, evaluated = _coco_matching(coco_gt, results)
        for entry in evaluated:
            for d, det_id in enumerate(entry["dtIds"]):
                gt_id = int(entry["dtMatches"][0, d])
                if entry["dtIgnore"][0, d]:
                    outcome[int(det_id)] = "ignored"
                elif gt_id > 0:
                    outcome[int(det_id)] = "tp"
                    claimed_by[gt_id] = int(det_id)
                else:
                    outcome[int(det_id)] = "fp"  # which kind: by its overlaps, in _image_errors
    return [_image_errors(ann, coco_gt, coco_dt, outcome, claimed_by, label_of) for ann in annotations]


def _image_errors(ann: dict, coco_gt, coco_dt, outcome: dict, claimed_by: dict, label_of: dict) -> ImageErrors:
    image_id = int(ann["image_id"])
    gt_entries = [g for g in coco_gt.imgToAnns.get(image_id, []) if not g["iscrowd"]]
    gt_boxes = np.asarray([_xywh_to_xyxy(g["bbox"]) for g in gt_entries], np.float32).reshape(-1, 4)
    gt_labels = np.asarray([label_of[int(g["category_id"])] for g in gt_entries], np.int64)
    dets = sorted(coco_dt.imgToAnns.get(image_id, []) if coco_dt is not None else [], key=lambda d: -d["score"])
    det_score = {int(d["id"]): float(d["score"]) for d in dets}
    gt_best = np.asarray([det_score.get(claimed_by.get(int(g["id"]), -1), 0.0) for g in gt_entries], np.float64)
    errors = ImageErrors(image_id=image_id, file_name=str(ann.get("file_name", "")), gt_boxes=gt_boxes,
                         gt_labels=gt_labels, gt_best_score=gt_best,
                         ignore_boxes=np.asarray(ann.get("ignore_boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4))
    if not dets:
        return errors
    boxes = np.asarray([_xywh_to_xyxy(d["bbox"]) for d in dets], np.float32)
    labels = np.asarray([label_of[int(d["category_id"])] for d in dets], np.int64)
    gt_t = torch.from_numpy(gt_boxes)
    kinds, best = [], []
    for d, det in enumerate(dets):
        kind = outcome.get(int(det["id"]), "not_evaluated")
        error_kind, iou = _classify(torch.from_numpy(boxes[d:d + 1]), int(labels[d]), gt_t, gt_labels)
        kinds.append(error_kind if kind == "fp" else kind)
        best.append(iou)
    errors.boxes, errors.labels, errors.kinds = boxes, labels, kinds
    errors.scores = np.asarray([d["score"] for d in dets], np.float32)
    errors.best_iou = np.asarray(best, np.float32)
    return errors

