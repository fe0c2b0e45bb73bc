"""Checking an exported detector against the eager one: per image on a few images, and COCO mAP on a split.

Per image, the exported detections are matched to the eager ones (same label, the closest box by
the largest coordinate difference) and the image passes when

- every detection is matched, with boxes within ``box_tol`` pixels and scores within ``score_tol``;
- except borderline detections, which may appear on one side only: a score within ``score_tol`` of
  the score threshold, or of the last kept score when the other side stopped at
  ``detections_per_img``. A score that close to a cut-off can cross it through float rounding
  alone (the exported graph sums in another order); such detections are counted and reported.

The exported graph reproduces the eager pipeline exactly (including cv2's fixed-point resize, and the
order of equal scores: detkit.ops.score_order's rule on both sides), so the differences measured are
float rounding: about 1e-4 px and 1e-6 in score on BCCD. Both sides run in fp32 (detkit.deploy.export
rebuilds the eager model with ``eval.precision=fp32``): an eager model under bf16 autocast would differ
by bf16 rounding, not by anything the export changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["Tolerances", "ImageComparison", "compare_detections", "summarise", "split_map"]


@dataclass
class Tolerances:
    """What the verification accepts (pixels of the original image; scores in [0, 1]; COCO mAP)."""
    box: float = 0.5
    score: float = 0.01
    map: float = 0.002


@dataclass
class ImageComparison:
    """The outcome of one image: counts, the largest differences, what stayed unmatched."""
    name: str
    eager: int
    exported: int
    matched: int
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    borderline: int = 0
    failures: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def _is_borderline(score: float, other_scores: Tensor, score_thresh: float, detections_per_img: int,
                   tol: float) -> bool:
    if score < score_thresh + tol:
        return True
    full = other_scores.numel() >= detections_per_img
    return bool(full and score <= float(other_scores.min()) + tol)


def compare_detections(name: str, eager: Dict[str, Tensor], exported: Dict[str, Tensor], *, tol: Tolerances,
                       score_thresh: float, detections_per_img: int) -> ImageComparison:
    """Match one image's detections (dicts of boxes (D, 4), scores (D,), labels (D,)) and judge them."""
    eb, es, el = eager["boxes"].float(), eager["scores"].float(), eager["labels"].long()
    xb, xs, xl = exported["boxes"].float(), exported["scores"].float(), exported["labels"].long()
    result = ImageComparison(name=name, eager=int(eb.shape[0]), exported=int(xb.shape[0]), matched=0)
    taken = torch.zeros(xb.shape[0], dtype=torch.bool)
    unmatched_eager = []
    for i in torch.argsort(es, descending=True, stable=True).tolist():
        candidates = torch.where((xl == el[i]) & ~taken)[0]
        if candidates.numel() == 0:
            unmatched_eager.append(i)
            continue
        diffs = (xb[candidates] - eb[i]).abs().amax(dim=1)  # (n,) largest coordinate difference
        j = int(candidates[int(diffs.argmin())])
        box_diff, score_diff = float(diffs.min()), abs(float(xs[j]) - float(es[i]))
        if box_diff > tol.box or score_diff > tol.score:
            unmatched_eager.append(i)
            continue
        taken[j] = True
        result.matched += 1
        result.max_box_diff = max(result.max_box_diff, box_diff)
        result.max_score_diff = max(result.max_score_diff, score_diff)
    sides = [("eager", i, float(es[i]), xs) for i in unmatched_eager]
    sides += [("exported", j, float(xs[j]), es) for j in torch.where(~taken)[0].tolist()]
    for side, index, score, other in sides:
        if _is_borderline(score, other, score_thresh, detections_per_img, tol.score):
            result.borderline += 1
        else:
            boxes = eb if side == "eager" else xb
            result.failures.append(f"{side} detection {index} (score {score:.4f}, box "
                                   f"{[round(v, 1) for v in boxes[index].tolist()]}) has no match within "
                                   f"{tol.box} px / {tol.score} score on the other side")
    return result


def summarise(comparisons: Sequence[ImageComparison]) -> dict:
    """Totals over images: passed, counts, largest differences, borderline detections."""
    return {"images": len(comparisons), "passed": all(c.passed for c in comparisons),
            "failed_images": [c.name for c in comparisons if not c.passed],
            "detections_eager": sum(c.eager for c in comparisons),
            "detections_exported": sum(c.exported for c in comparisons),
            "matched": sum(c.matched for c in comparisons),
            "borderline": sum(c.borderline for c in comparisons),
            "max_box_diff": max((c.max_box_diff for c in comparisons), default=0.0),
            "max_score_diff": max((c.max_score_diff for c in comparisons), default=0.0)}


def split_map(dataset, detect_eager: Callable[[np.ndarray], dict], detect_exported: Callable[[np.ndarray], dict],
              read: Callable[[str], np.ndarray], *,
              compare: Optional[Callable[[str, dict, dict], ImageComparison]] = None,
              progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """COCO metrics of both models on every image of ``dataset``: {"eager": {...}, "exported": {...}, "delta"},
    and with ``compare`` (name, eager, exported -> ImageComparison) the per-image check's ``summary`` too."""
    from detkit.evaluation.evaluator import evaluate_detections

    annotations, eager, exported, comparisons = [], [], [], []
    for i in range(len(dataset)):
        image = read(dataset.image_path(i))
        annotations.append(dataset.get_annotation(i))
        eager.append({k: v.cpu() for k, v in detect_eager(image).items()})
        exported.append({k: v.cpu() for k, v in detect_exported(image).items()})
        if compare is not None:
            comparisons.append(compare(dataset.image_path(i), eager[-1], exported[-1]))
        if progress is not None:
            progress(i + 1, len(dataset))
    out = {}
    for name, dets in (("eager", eager), ("exported", exported)):
        metrics, _ = evaluate_detections(annotations, dets, dataset.classes, dataset.category_ids)
        out[name] = {k: float(metrics["coco"][k]) for k in ("mAP", "AP50", "AP75")}
    out["delta"] = {k: out["exported"][k] - out["eager"][k] for k in ("mAP", "AP50", "AP75")}
    out["images"] = len(dataset)
    if compare is not None:
        out["summary"] = summarise(comparisons)
    return out
