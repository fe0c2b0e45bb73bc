"""The VOC matcher and confusion matrix detkit had before they were vectorised (one box_iou per detection):
the oracle tests/engine/test_eval_backends.py holds detkit.evaluation.evaluator to."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from detkit.evaluation.evaluator import _numpy, _voc_ap
from detkit.ops.boxes import box_iou


def reference_voc_evaluate(annotations: Sequence[dict], detections: Sequence[dict], classes: Sequence[str],
                 iou_threshold: float = 0.5) -> dict:
    """VOC mAP at one IoU threshold, 11-point (VOC2007) and area under the curve (VOC2010+).

    ``annotations`` and ``detections`` are aligned per image (same order). Returns
    ``{"mAP50_11pt", "mAP50_area", "per_class": {name: {"AP50_11pt", "AP50_area"}}}``; classes without
    ground truth are left out of the means.
    """
    per_class, ap11, ap_area = {}, [], []
    for k, name in enumerate(classes, start=1):
        records, num_pos = [], 0
        for img, (ann, det) in enumerate(zip(annotations, detections)):
            labels = np.asarray(ann["labels"]).reshape(-1)
            num_pos += int((labels == k).sum())
            det_labels = _numpy(det["labels"]).reshape(-1)
            for score, box in zip(_numpy(det["scores"]).reshape(-1)[det_labels == k],
                                  _numpy(det["boxes"]).reshape(-1, 4)[det_labels == k]):
                records.append((float(score), img, box))
        if num_pos == 0:
            continue
        records.sort(key=lambda r: -r[0])  # stable: equal scores keep image order
        tp, fp = _match_voc(records, annotations, k, iou_threshold)
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
        recall = tp_cum / num_pos
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        a11, aa = _voc_ap(recall, precision, True), _voc_ap(recall, precision, False)
        per_class[name] = {"AP50_11pt": a11, "AP50_area": aa}
        ap11.append(a11)
        ap_area.append(aa)
    return {"mAP50_11pt": float(np.mean(ap11)) if ap11 else 0.0,
            "mAP50_area": float(np.mean(ap_area)) if ap_area else 0.0, "per_class": per_class}


def _match_voc(records: list, annotations: Sequence[dict], label: int, iou_threshold: float):
    """Greedy VOC matching of score-sorted detections of one class; returns tp, fp arrays (0/1)."""
    used = {}
    tp = np.zeros(len(records))
    fp = np.zeros(len(records))
    for d, (_, img, box) in enumerate(records):
        ann = annotations[img]
        gt = np.asarray(ann["boxes"], dtype=np.float32).reshape(-1, 4)[np.asarray(ann["labels"]).reshape(-1) == label]
        ignore = np.asarray(ann.get("ignore_boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        ignore_labels = ann.get("ignore_labels")
        if ignore_labels is not None:
            ignore = ignore[np.asarray(ignore_labels).reshape(-1) == label]
        candidates = torch.from_numpy(np.concatenate([gt, ignore]))
        if len(candidates) == 0:
            fp[d] = 1
            continue
        ious = box_iou(torch.from_numpy(np.asarray(box, dtype=np.float32)[None]), candidates)[0]
        best = int(ious.argmax())
        if float(ious[best]) < iou_threshold:
            fp[d] = 1
        elif best >= len(gt):
            continue  # matched an ignore region (VOC 'difficult'): neither true nor false positive
        elif best in used.setdefault(img, set()):
            fp[d] = 1
        else:
            used[img].add(best)
            tp[d] = 1
    return tp, fp


def reference_confusion_matrix(annotations: Sequence[dict], detections: Sequence[dict], num_classes: int,
                     iou_threshold: float = 0.5, score_threshold: float = 0.5) -> np.ndarray:
    """Class confusion of detections above ``score_threshold`` against the ground truth.

    Detections are matched greedily by decreasing score to the unmatched ground-truth box of highest
    IoU (any class) at or above ``iou_threshold``. Returns int64 (K + 1, K + 1): rows are the true
    class, columns the predicted one, index 0 is background (row 0: false detections; column 0:
    missed objects). Detections on ignore regions are not counted.
    """
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for ann, det in zip(annotations, detections):
        gt = torch.as_tensor(np.asarray(ann["boxes"], dtype=np.float32).reshape(-1, 4))
        gt_labels = np.asarray(ann["labels"]).reshape(-1)
        ignore = torch.as_tensor(np.asarray(ann.get("ignore_boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4))
        scores = _numpy(det["scores"]).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        order = order[scores[order] >= score_threshold]
        boxes = torch.as_tensor(_numpy(det["boxes"]).reshape(-1, 4)[order], dtype=torch.float32)
        labels = _numpy(det["labels"]).reshape(-1)[order]
        ious = box_iou(boxes, gt) if len(gt) and len(boxes) else torch.zeros(len(boxes), len(gt))
        ignore_iou = box_iou(boxes, ignore) if len(ignore) and len(boxes) else torch.zeros(len(boxes), 0)
        matched = np.zeros(len(gt), dtype=bool)
        for d in range(len(boxes)):
            row = ious[d].clone()
            row[torch.from_numpy(matched)] = -1
            best = int(row.argmax()) if len(gt) else -1
            if best >= 0 and float(row[best]) >= iou_threshold:
                matched[best] = True
                matrix[int(gt_labels[best]), int(labels[d])] += 1
            elif ignore_iou.shape[1] and float(ignore_iou[d].max()) >= iou_threshold:
                continue
            else:
                matrix[0, int(labels[d])] += 1
        for g in np.where(~matched)[0]:
            matrix[int(gt_labels[g]), 0] += 1
    return matrix


