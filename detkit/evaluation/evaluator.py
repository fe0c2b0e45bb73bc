"""Evaluation: model outputs -> COCO results -> pycocotools COCOeval, plus VOC mAP@0.5.

Ground truth is built from the data set's annotations in original image coordinates. Ignore regions
(COCO ``iscrowd`` boxes, VOC ``difficult`` objects under the ``ignore`` policy) become COCO crowd
annotations, which COCOeval neither rewards nor penalises a detection for; an ignore region carries
its class when the data set gives ``ignore_labels``, otherwise it is an ignore region for every class.
The VOC numbers use the same detections and the same ignore rule (a detection whose best match is
an ignore region counts neither as true nor as false positive), with both the VOC2007 11-point and
the area-under-curve (VOC2010+) interpolation.
"""

from __future__ import annotations

import contextlib
import io
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.atomic_io import write_json_atomic
from detkit.errors import ConfigError
from detkit.ops.boxes import box_iou

__all__ = [
    "COCO_METRIC_NAMES", "build_coco_ground_truth", "detections_to_coco_results", "coco_evaluate",
    "voc_evaluate", "confusion_matrix", "evaluate_detections", "format_coco_table", "format_per_class_table",
    "write_json", "EVAL_BACKENDS",
]

# COCOeval implementations: pycocotools (the reference) and faster-coco-eval (eval.backend: faster).
EVAL_BACKENDS = ("pycocotools", "faster")

COCO_METRIC_NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def build_coco_ground_truth(annotations: Sequence[dict], classes: Sequence[str],
                            category_ids: Sequence[int]) -> COCO:
    """A pycocotools COCO object from per-image annotation dicts (original image coordinates).

    Args:
        annotations: per image, ``boxes`` (N, 4) xyxy, ``labels`` (N,) in 1..K, ``ignore_boxes`` (G, 4),
            optional ``ignore_labels`` (G,), ``image_id``, ``orig_size`` (h, w), ``file_name``.
        classes: K class names; category_ids: K data set category ids (label i -> category_ids[i-1]).
    """
    images, anns = [], []
    for ann in annotations:
        height, width = (int(v) for v in ann["orig_size"])
        image_id = int(ann["image_id"])
        images.append({"id": image_id, "height": height, "width": width, "file_name": str(ann.get("file_name", ""))})
        for box, label in zip(_xyxy_to_xywh(ann["boxes"]), np.asarray(ann["labels"]).reshape(-1)):
            anns.append(_gt_entry(len(anns) + 1, image_id, int(category_ids[int(label) - 1]), box, crowd=0))
        ignore = _xyxy_to_xywh(ann.get("ignore_boxes", np.zeros((0, 4))))
        ignore_labels = ann.get("ignore_labels")
        for g, box in enumerate(ignore):
            cats = ([int(category_ids[int(ignore_labels[g]) - 1])] if ignore_labels is not None
                    else [int(c) for c in category_ids])
            for cat in cats:
                anns.append(_gt_entry(len(anns) + 1, image_id, cat, box, crowd=1))
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": int(c), "name": str(n)} for c, n in zip(category_ids, classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _gt_entry(ann_id: int, image_id: int, category_id: int, xywh: np.ndarray, crowd: int) -> dict:
    w, h = float(xywh[2]), float(xywh[3])
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "iscrowd": crowd,
            "bbox": [float(xywh[0]), float(xywh[1]), w, h], "area": w * h}


def detections_to_coco_results(detections: Sequence[dict], image_ids: Sequence[int],
                               category_ids: Sequence[int], file_names: Optional[Sequence[str]] = None) -> list:
    """COCO results format: one dict per detection with bbox in (x, y, w, h) and the data set's category id.

    Args:
        detections: per image ``boxes`` Tensor[D, 4] xyxy (original coordinates), ``scores`` Tensor[D],
            ``labels`` Tensor[D] in 1..K.
    """
    results = []
    for i, (det, image_id) in enumerate(zip(detections, image_ids)):
        boxes = _xyxy_to_xywh(_numpy(det["boxes"]))
        scores = _numpy(det["scores"]).reshape(-1)
        labels = _numpy(det["labels"]).reshape(-1)
        image_id = int(image_id)
        name = str(file_names[i]) if file_names is not None else None
        # tolist(): Python floats of the same values, rounded by Python's round() as before
        for box, score, label in zip(boxes.tolist(), scores.astype(np.float64).tolist(), labels.tolist()):
            entry = {"image_id": image_id, "category_id": int(category_ids[int(label) - 1]),
                     "bbox": [round(v, 3) for v in box], "score": round(score, 5)}
            if name is not None:
                entry["file_name"] = name
            results.append(entry)
    return results


def _numpy(value) -> np.ndarray:
    if torch.is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _run_cocoeval(coco_gt: COCO, results: list, backend: str):
    """(stats (12,), precision (T, R, K, A, M)) of COCOeval on `results`, by the chosen backend."""
    if backend == "pycocotools":
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval(coco_gt, coco_dt, "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return evaluator.stats, evaluator.eval["precision"]
    if backend == "faster":
        # faster-coco-eval: pycocotools' algorithm with the per-image matching and the accumulation
        # in C++ (the same numbers; tests/engine/test_eval_backends.py holds it to pycocotools).
        try:
            from faster_coco_eval import COCO as FasterCOCO
            from faster_coco_eval import COCOeval_faster
        except ImportError:
            raise ConfigError("eval.backend = 'faster' needs the package faster-coco-eval (pip install "
                              "faster-coco-eval, a dependency of detkit), or set eval.backend=pycocotools") from None

        gt = FasterCOCO(coco_gt.dataset)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = COCOeval_faster(gt, gt.loadRes(results), "bbox", print_function=lambda *args: None)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return evaluator.stats, evaluator.eval["precision"]
    raise ValueError(f"evaluation backend {backend!r} is not valid; choose one of {EVAL_BACKENDS}")


def coco_evaluate(coco_gt: COCO, results: list, classes: Sequence[str], backend: str = "pycocotools") -> dict:
    """Run COCOeval (bbox). Returns ``{"coco": {12 named numbers}, "per_class": {name: {"AP", "AP50"}}}``.

    ``backend``: ``pycocotools`` (the reference) or ``faster`` (faster-coco-eval, same numbers).
    """
    if backend not in EVAL_BACKENDS:
        raise ValueError(f"evaluation backend {backend!r} is not valid; choose one of {EVAL_BACKENDS}")
    zeros = {"coco": {name: 0.0 for name in COCO_METRIC_NAMES},
             "per_class": {name: {"AP": 0.0, "AP50": 0.0} for name in classes},
             "pr_curves": {name: [0.0] * 101 for name in classes}}
    if not results:
        return zeros
    results = [{k: v for k, v in r.items() if k != "file_name"} for r in results]
    raw_stats, precision = _run_cocoeval(coco_gt, results, backend)
    stats = [max(float(s), 0.0) for s in raw_stats]  # -1 means "no ground truth": report 0
    # precision: (T IoUs, R recalls, K classes, A areas, M max-dets)
    per_class, pr_curves = {}, {}
    for k, name in enumerate(classes):
        # precision at the 101 recall points at IoU 0.5, all areas, 100 detections (-1: no ground truth)
        pr_curves[name] = [max(float(v), 0.0) for v in precision[0, :, k, 0, -1]]
        p = precision[:, :, k, 0, -1]
        p50 = precision[0, :, k, 0, -1]
        per_class[name] = {"AP": float(p[p > -1].mean()) if (p > -1).any() else 0.0,
                           "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0}
    return {"coco": dict(zip(COCO_METRIC_NAMES, stats)), "per_class": per_class, "pr_curves": pr_curves}


def _voc_ap(recall: np.ndarray, precision: np.ndarray, eleven_point: bool) -> float:
    if eleven_point:
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.linspace(0, 1, 11)]))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def _best_voc_candidates(annotations: Sequence[dict], detections: Sequence[dict]) -> dict:
    """For every detection (image by image, in order): its best-IoU candidate among the ground truth
    of its class followed by the ignore regions of its class (or all ignore regions without
    ``ignore_labels``), as the VOC matcher meets them. Returns flat arrays: image, label, score,
    best IoU (NaN when there is no candidate), whether the best is an ignore region, and the best
    ground truth's index into all ground-truth boxes (-1 for none or an ignore region)."""
    out = {k: [] for k in ("label", "score", "iou", "has", "ignore", "gt")}
    gt_base = 0
    for ann, det in zip(annotations, detections):
        gt = np.asarray(ann["boxes"], dtype=np.float32).reshape(-1, 4)
        gt_labels = np.asarray(ann["labels"]).reshape(-1)
        ignore = np.asarray(ann.get("ignore_boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        ignore_labels = ann.get("ignore_labels")
        labels = _numpy(det["labels"]).reshape(-1)
        boxes = np.asarray(_numpy(det["boxes"]), dtype=np.float32).reshape(-1, 4)
        candidates = np.concatenate([gt, ignore])
        iou = (box_iou(torch.from_numpy(boxes), torch.from_numpy(candidates)).numpy()
               if len(boxes) and len(candidates) else np.zeros((len(boxes), len(candidates)), np.float32))
        cand_labels = np.concatenate([gt_labels, np.asarray(ignore_labels).reshape(-1) if ignore_labels is not None
                                      else np.full(len(ignore), -1)])
        allowed = (cand_labels[None, :] == labels[:, None]) | (cand_labels[None, :] == -1) & (
            np.arange(len(candidates)) >= len(gt))[None, :]  # (D, C)
        masked = np.where(allowed, iou, -np.inf)
        best = masked.argmax(axis=1) if len(candidates) else np.zeros(len(boxes), np.int64)
        has = allowed.any(axis=1)
        best_iou = np.where(has, masked[np.arange(len(boxes)), best] if len(candidates) else np.nan, np.nan)
        out["label"].append(labels.astype(np.int64))
        out["score"].append(_numpy(det["scores"]).reshape(-1).astype(np.float64))
        out["iou"].append(best_iou.astype(np.float64))
        out["has"].append(has)
        out["ignore"].append(has & (best >= len(gt)))
        out["gt"].append(np.where(has & (best < len(gt)), gt_base + best, -1))
        gt_base += len(gt)
    return {k: np.concatenate(v) if v else np.zeros(0, bool if k in ("has", "ignore") else np.float64)
            for k, v in out.items()}


def voc_evaluate(annotations: Sequence[dict], detections: Sequence[dict], classes: Sequence[str],
                 iou_threshold: float = 0.5) -> dict:
    """VOC mAP at one IoU threshold, 11-point (VOC2007) and area under the curve (VOC2010+).

    ``annotations`` and ``detections`` are aligned per image (same order). Returns
    ``{"mAP50_11pt", "mAP50_area", "per_class": {name: {"AP50_11pt", "AP50_area"}}}``; classes without
    ground truth are left out of the means.

    Matching: the detections of a class by decreasing score (equal scores in image order), each to
    its best-IoU candidate (ground truth of its class, then ignore regions); at or above the threshold
    an ignore region makes it neither true nor false, an unclaimed ground truth a true positive, a
    claimed one a false positive; below it, or with no candidate, a false positive.
    """
    per_class, ap11, ap_area = {}, [], []
    cand = _best_voc_candidates(annotations, detections)
    all_labels = (np.concatenate([np.asarray(a["labels"]).reshape(-1) for a in annotations])
                  if len(annotations) else np.zeros(0, np.int64))
    for k, name in enumerate(classes, start=1):
        num_pos = int((all_labels == k).sum())
        if num_pos == 0:
            continue
        sel = np.flatnonzero(cand["label"] == k)
        order = sel[np.argsort(-cand["score"][sel], kind="stable")]  # stable: equal scores keep image order
        above = cand["has"][order] & ~(cand["iou"][order] < iou_threshold)
        counted = ~(above & cand["ignore"][order])  # an ignore region's match counts neither way
        claims = above & ~cand["ignore"][order]
        tp = np.zeros(len(order))
        gt_of = cand["gt"][order]
        claim_pos = np.flatnonzero(claims)
        _, first = np.unique(gt_of[claim_pos], return_index=True)  # the first claim of each ground truth
        tp[claim_pos[first]] = 1
        fp = counted.astype(np.float64) - tp
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
        recall = tp_cum / num_pos
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        a11, aa = _voc_ap(recall, precision, True), _voc_ap(recall, precision, False)
        per_class[name] = {"AP50_11pt": a11, "AP50_area": aa}
        ap11.append(a11)
        ap_area.append(aa)
    return {"mAP50_11pt": float(np.mean(ap11)) if ap11 else 0.0,
            "mAP50_area": float(np.mean(ap_area)) if ap_area else 0.0, "per_class": per_class}


def confusion_matrix(annotations: Sequence[dict], detections: Sequence[dict], num_classes: int,
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
        ious = box_iou(boxes, gt).numpy() if len(gt) and len(boxes) else np.zeros((len(boxes), len(gt)), np.float32)
        on_ignore = (box_iou(boxes, ignore).numpy().max(axis=1) >= iou_threshold if len(ignore) and len(boxes)
                     else np.zeros(len(boxes), dtype=bool))
        matched = np.zeros(len(gt), dtype=bool)
        for d in range(len(boxes)):  # greedy: each detection's best ground truth among those still unmatched
            row = np.where(matched, np.float32(-1), ious[d])
            best = int(row.argmax()) if len(gt) else -1
            if best >= 0 and float(row[best]) >= iou_threshold:
                matched[best] = True
                matrix[int(gt_labels[best]), int(labels[d])] += 1
            elif not on_ignore[d]:
                matrix[0, int(labels[d])] += 1
        np.add.at(matrix, (gt_labels[~matched].astype(np.int64), 0), 1)
    return matrix


def evaluate_detections(annotations: Sequence[dict], detections: Sequence[dict], classes: Sequence[str],
                        category_ids: Sequence[int], backend: str = "pycocotools") -> tuple[dict, list]:
    """COCO and VOC metrics for per-image detections aligned with ``annotations``.

    ``backend``: the COCOeval implementation (see :func:`coco_evaluate`; eval.backend).

    Returns (metrics dict for eval.json, COCO results list for detections.json).
    """
    coco_gt = build_coco_ground_truth(annotations, classes, category_ids)
    results = detections_to_coco_results(detections, [a["image_id"] for a in annotations], category_ids,
                                         [a.get("file_name", "") for a in annotations])
    metrics = coco_evaluate(coco_gt, results, classes, backend=backend)
    metrics["voc"] = voc_evaluate(annotations, detections, classes)
    metrics["confusion_matrix"] = confusion_matrix(annotations, detections, len(classes)).tolist()
    metrics["num_images"] = len(annotations)
    metrics["num_detections"] = len(results)
    return metrics, results


def format_coco_table(metrics: dict) -> str:
    """The 12 COCO numbers as a two-row text table."""
    names = COCO_METRIC_NAMES
    head = " ".join(f"{n:>6}" for n in names)
    row = " ".join(f"{metrics['coco'][n]:6.3f}" for n in names)
    return f"{head}\n{row}"


def format_per_class_table(metrics: dict) -> str:
    """Per-class AP (COCO AP, AP50, VOC AP50 area) as a text table."""
    width = max([5] + [len(n) for n in metrics["per_class"]])
    lines = [f"{'class':<{width}}  {'AP':>6} {'AP50':>6} {'VOC50':>6}"]
    voc = metrics.get("voc", {}).get("per_class", {})
    for name, values in metrics["per_class"].items():
        voc_ap = voc.get(name, {}).get("AP50_area", float("nan"))
        lines.append(f"{name:<{width}}  {values['AP']:6.3f} {values['AP50']:6.3f} {voc_ap:6.3f}")
    return "\n".join(lines)


def write_json(data, path: str) -> None:
    """Write JSON atomically (eval.json, detections.json)."""
    write_json_atomic(data, path)


def iterate_annotations(dataset) -> Iterable[dict]:
    """Every annotation of a data set, without decoding images."""
    for i in range(len(dataset)):
        yield dataset.get_annotation(i)
