"""Detections as the JSON entries inference writes (detections.json, a video's per-frame lines)."""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

__all__ = ["coco_entries"]


def coco_entries(boxes, scores, labels, category_ids: Sequence[int]) -> List[dict]:
    """One ``{"category_id", "bbox": [x, y, w, h], "score"}`` per detection (COCO results format, bbox
    rounded to 0.01 px, score to 1e-5).

    Args:
        boxes: (D, 4) xyxy; scores: (D,); labels: (D,) in 1..K (arrays or CPU tensors).
        category_ids: the data set's category id of each class (label k -> ``category_ids[k - 1]``).
    """
    entries = []
    for box, score, label in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores).tolist(),
                                 np.asarray(labels).tolist()):
        x1, y1, x2, y2 = (float(v) for v in box)
        entries.append({"category_id": int(category_ids[int(label) - 1]),
                        "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                        "score": round(float(score), 5)})
    return entries
