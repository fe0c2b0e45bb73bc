"""How well a set of anchor shapes fits a set of ground-truth boxes (the metrics of docs/anchors.md).

Shape shorthand: N ground-truth boxes, I images, L levels, A anchor shapes per level and location,
H_l / W_l the feature-map size of level l. Boxes are xyxy in network-input pixels (after the
training resize); anchor shapes are (w, h).

Two families of metrics:

* centred: ``IoU_c`` of each box shape with every anchor shape on a common centre
  (:func:`detkit.ops.boxes.centred_iou`); ``mbiou`` is the mean over boxes of the best one.
* grid-aware: the real anchors tiled over each image (all levels, all positions), ordinary IoU.
  Per level, the anchor centre nearest to a box's centre is the best position for *every* shape
  (the overlap along x, ``min(wg, wa, (wg + wa) / 2 - |dx|)``, only falls with ``|dx|``), so the
  best grid IoU of a box is exact from its per-level offsets to the nearest centre
  (:func:`grid_offsets`, :func:`offset_iou`) in O(N x L x A). Counting the anchors at IoU >= t per
  box is also exact and never forms the anchors x boxes matrix: per level and column the rows that
  reach the threshold are an interval around the box centre (:func:`grid_positive_counts`).

By construction grid best IoU <= centred best IoU for every box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from detkit.ops.boxes import centred_iou

__all__ = [
    "BoxSet", "feature_sizes", "grid_offsets", "offset_iou", "centred_best_iou", "grid_best_iou",
    "grid_positive_counts", "evaluate_anchors", "SIZE_BUCKETS", "size_bucket",
]

# COCO size buckets on the box area in network-input pixels.
SIZE_BUCKETS: Tuple[Tuple[str, float, float], ...] = (
    ("small", 0.0, 32.0 ** 2), ("medium", 32.0 ** 2, 96.0 ** 2), ("large", 96.0 ** 2, math.inf))


@dataclass
class BoxSet:
    """Ground-truth boxes of a set of resized images, flattened.

    Attributes:
        boxes: float64 (N, 4) xyxy in network-input pixels.
        image_index: int64 (N,), the image each box belongs to (into ``image_sizes``).
        image_sizes: int64 (I, 2) (h, w) of every resized image.
    """

    boxes: np.ndarray
    image_index: np.ndarray
    image_sizes: np.ndarray

    @classmethod
    def from_images(cls, boxes_per_image: Sequence[np.ndarray], image_sizes: Sequence[Tuple[int, int]]) -> "BoxSet":
        """Build from one (N_i, 4) array per image and its (h, w); boxes with w or h <= 0 are dropped."""
        if len(boxes_per_image) != len(image_sizes):
            raise ValueError(f"{len(boxes_per_image)} box arrays for {len(image_sizes)} image sizes")
        parts = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes_per_image]
        index = [np.full(len(p), i, dtype=np.int64) for i, p in enumerate(parts)]
        boxes = np.concatenate(parts) if parts else np.zeros((0, 4))
        image_index = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        sizes = np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2)
        return cls(boxes=boxes[keep], image_index=image_index[keep], image_sizes=sizes)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def wh(self) -> np.ndarray:
        """float64 (N, 2) widths and heights."""
        return self.boxes[:, 2:] - self.boxes[:, :2]

    def select(self, keep: np.ndarray) -> "BoxSet":
        """The boxes at `keep` (a boolean mask or indices), same images."""
        return BoxSet(boxes=self.boxes[keep], image_index=self.image_index[keep], image_sizes=self.image_sizes)

    def subsample(self, max_boxes: int, seed: int) -> "BoxSet":
        """At most `max_boxes` boxes, a seeded uniform sample (in their original order) beyond it."""
        if len(self) <= max_boxes:
            return self
        rng = np.random.default_rng(seed)
        return self.select(np.sort(rng.choice(len(self), size=max_boxes, replace=False)))


def size_bucket(wh: np.ndarray) -> np.ndarray:
    """Index into SIZE_BUCKETS of each box by its area w * h. wh: (N, 2) -> int64 (N,)."""
    area = wh[:, 0] * wh[:, 1]
    edges = np.array([b[2] for b in SIZE_BUCKETS[:-1]])
    return np.searchsorted(edges, area, side="right").astype(np.int64)


def feature_sizes(image_size: Tuple[int, int], strides: Sequence[int],
                  size_divisible: int = 32) -> List[Tuple[int, int]]:
    """Feature-map (H_l, W_l) of each level for an image padded up to a multiple of `size_divisible`."""
    h = math.ceil(image_size[0] / size_divisible) * size_divisible
    w = math.ceil(image_size[1] / size_divisible) * size_divisible
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def _image_grids(image_sizes: np.ndarray, strides: Sequence[int], size_divisible: int) -> np.ndarray:
    """:func:`feature_sizes` of every image, int64 (I, L, 2) as (H_l, W_l), computed once per distinct size."""
    sizes = np.asarray(image_sizes, dtype=np.int64).reshape(-1, 2)
    distinct, inverse = np.unique(sizes, axis=0, return_inverse=True)
    grids = np.array([feature_sizes(tuple(sz), strides, size_divisible) for sz in distinct], dtype=np.int64)
    return grids.reshape(len(distinct), len(strides), 2)[inverse.reshape(-1)]


def grid_offsets(boxes: BoxSet, strides: Sequence[int], *, offset: float = 0.0, size_divisible: int = 32) -> np.ndarray:
    """|dx|, |dy| from each box centre to the nearest anchor centre of every level.

    Returns:
        float64 (N, L, 2). Anchor centres are ``(j + offset) * stride`` for j in [0, W_l) (rows alike).
    """
    n = len(boxes)
    out = np.zeros((n, len(strides), 2))
    if n == 0:
        return out
    grid = _image_grids(boxes.image_sizes, strides, size_divisible)[boxes.image_index]  # (I, L, 2) -> (N, L, 2)
    centre = (boxes.boxes[:, :2] + boxes.boxes[:, 2:]) / 2  # (N, 2) as (cx, cy)
    stride = np.asarray(strides, dtype=np.float64)[None, :, None]  # (1, L, 1)
    cxy = centre[:, None, :]  # (N, 2) -> (N, 1, 2)
    limit = grid[..., ::-1] - 1  # (N, L, 2) as (W_l - 1, H_l - 1)
    j = np.clip(np.floor(cxy / stride - offset + 0.5), 0, limit)  # nearest position index
    return np.abs(cxy - (j + offset) * stride)


def offset_iou(box_wh: Tensor, offsets: Optional[Tensor], shapes: Tensor) -> Tensor:
    """IoU of each box with each anchor shape whose centre is displaced by the box's level offset.

    Differentiable in `shapes` (used by the learned fit). offsets None means centred (IoU_c).

    Args:
        box_wh: Tensor[N, 2]; offsets: Tensor[N, L, 2] (|dx|, |dy|) or None; shapes: Tensor[L, A, 2].
    Returns:
        Tensor[N, L, A].
    """
    g = box_wh[:, None, None, :]  # (N, 2) -> (N, 1, 1, 2)
    a = shapes[None]  # (L, A, 2) -> (1, L, A, 2)
    overlap = torch.minimum(g, a)  # (N, L, A, 2)
    if offsets is not None:
        d = offsets[:, :, None, :]  # (N, L, 2) -> (N, L, 1, 2)
        overlap = torch.minimum(overlap, ((g + a) / 2 - d).clamp(min=0))
    inter = overlap[..., 0] * overlap[..., 1]  # (N, L, A)
    union = g[..., 0] * g[..., 1] + a[..., 0] * a[..., 1] - inter
    return inter / union


def centred_best_iou(box_wh: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Best IoU_c of each box shape with any anchor shape. box_wh: (N, 2); shapes: (..., 2) -> float64 (N,)."""
    wh = torch.as_tensor(np.asarray(box_wh, dtype=np.float64)).reshape(-1, 2)
    anchors = torch.as_tensor(np.asarray(shapes, dtype=np.float64)).reshape(-1, 2)
    if wh.shape[0] == 0:
        return np.zeros(0)
    best = [centred_iou(chunk, anchors).max(dim=1).values for chunk in wh.split(65536)]
    return torch.cat(best).numpy()


def grid_best_iou(box_wh: np.ndarray, offsets: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Best IoU of each box with any anchor of the grid. box_wh (N, 2), offsets (N, L, 2), shapes (L, A, 2) -> (N,)."""
    wh = torch.as_tensor(np.asarray(box_wh, dtype=np.float64))
    if wh.shape[0] == 0:
        return np.zeros(0)
    iou = offset_iou(wh, torch.as_tensor(offsets, dtype=torch.float64), torch.as_tensor(shapes, dtype=torch.float64))
    return iou.flatten(1).max(dim=1).values.numpy()  # (N, L, A) -> (N, L*A) -> (N,)


def _level_positive_counts(boxes: np.ndarray, grid_hw: np.ndarray, shapes: np.ndarray, stride: float, offset: float,
                           threshold: float) -> np.ndarray:
    """Anchors of one level with IoU >= threshold per box. boxes (n, 4), grid_hw (n, 2), shapes (A, 2) -> (n,).

    For every column x_j the overlap along x is ox_j; the rows that reach the threshold are those
    whose overlap along y is >= v = t * (area_g + area_a) / ((1 + t) * ox_j), i.e. the rows whose
    centre lies within (hg + ha) / 2 - v of the box centre (and only if v <= min(hg, ha)): a count in
    closed form, so the work is n x A x W_l, not n x A x H_l x W_l.
    """
    wg, hg = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]  # (n,)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    wa, ha = shapes[None, :, 0], shapes[None, :, 1]  # (1, A)
    width = int(grid_hw[:, 1].max())
    xs = (np.arange(width) + offset) * stride  # (W,)
    d = np.abs(xs[None, None, :] - cx[:, None, None])  # (n, 1, W)
    ox = np.minimum(np.minimum(wg[:, None], wa)[..., None], (wg[:, None] + wa)[..., None] / 2 - d)  # (n, A, W)
    beyond = np.arange(width)[None, :] >= grid_hw[:, 1:2]  # (n, W): columns past this image's grid
    ox = np.where(beyond[:, None, :], 0.0, ox)
    need = threshold * (wg * hg)[:, None] + threshold * wa * ha  # (n, A)
    with np.errstate(divide="ignore"):
        v = np.where(ox > 0, need[..., None] / ((1 + threshold) * ox), np.inf)  # (n, A, W)
    r = (hg[:, None] + ha)[..., None] / 2 - v  # (n, A, W) half-range of row centres
    lo = np.maximum(np.ceil((cy[:, None, None] - r) / stride - offset), 0)
    hi = np.minimum(np.floor((cy[:, None, None] + r) / stride - offset), grid_hw[:, 0, None, None] - 1)
    ok = v <= np.minimum(hg[:, None], ha)[..., None]
    return np.where(ok, np.maximum(hi - lo + 1, 0), 0).sum(axis=(1, 2)).astype(np.int64)


def grid_positive_counts(boxes: BoxSet, shapes: np.ndarray, strides: Sequence[int], threshold: float, *,
                         offset: float = 0.0, size_divisible: int = 32, chunk_elements: int = 1 << 22) -> np.ndarray:
    """Number of grid anchors (all levels, positions and shapes) with IoU >= threshold, per box -> int64 (N,).

    Boxes are processed in chunks of about `chunk_elements` (box, shape, column) entries per level
    (a memory bound, not a cap on the result).
    """
    shapes = np.asarray(shapes, dtype=np.float64)  # (L, A, 2)
    counts = np.zeros(len(boxes), dtype=np.int64)
    if len(boxes) == 0:
        return counts
    grids = _image_grids(boxes.image_sizes, strides, size_divisible)  # (I, L, 2)
    grid = grids[boxes.image_index]  # (N, L, 2) as (H_l, W_l)
    for level, stride in enumerate(strides):
        step = max(1, chunk_elements // (shapes.shape[1] * int(grid[:, level, 1].max())))
        for k in range(0, len(boxes), step):
            counts[k:k + step] += _level_positive_counts(boxes.boxes[k:k + step], grid[k:k + step, level],
                                                         shapes[level], float(stride), offset, threshold)
    return counts


def _summary(centred: np.ndarray, grid: Optional[np.ndarray], positives: Optional[np.ndarray]) -> Dict[str, float]:
    out: Dict[str, float] = {"num_boxes": int(len(centred)),
                             "mbiou": float(centred.mean()) if len(centred) else math.nan}
    if grid is not None:
        empty = len(grid) == 0
        out["grid_miou"] = math.nan if empty else float(grid.mean())
        out["recall@0.5"] = math.nan if empty else float((grid >= 0.5).mean())
        out["recall@0.7"] = math.nan if empty else float((grid >= 0.7).mean())
        out["below@0.3"] = math.nan if empty else float((grid < 0.3).mean())
    if positives is not None:
        out["pos_per_gt"] = math.nan if len(positives) == 0 else float(positives.mean())
    return out


def evaluate_anchors(shapes: np.ndarray, *, box_wh: Optional[np.ndarray] = None, boxes: Optional[BoxSet] = None,
                     strides: Optional[Sequence[int]] = None, offset: float = 0.0, size_divisible: int = 32,
                     count_positives: bool = True, pos_threshold: float = 0.7) -> Dict[str, object]:
    """All metrics of docs/anchors.md for one anchor set.

    Give either `box_wh` (N, 2) for the centred metrics alone, or `boxes` (a :class:`BoxSet`) with
    `strides` for the centred and grid-aware ones. shapes: (L, A, 2).

    Returns:
        ``{"num_boxes", "mbiou", "grid_miou", "recall@0.5", "recall@0.7", "below@0.3", "pos_per_gt",
        "by_size": {"small"|"medium"|"large": same keys}}`` (grid keys only when `boxes` is given).
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    if boxes is None and box_wh is None:
        raise ValueError("evaluate_anchors needs box_wh or boxes")
    wh = boxes.wh if boxes is not None else np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    centred = centred_best_iou(wh, shapes)
    grid = positives = None
    if boxes is not None:
        if strides is None or len(strides) != shapes.shape[0]:
            raise ValueError(f"need one stride per level of the anchor shapes ({shapes.shape[0]}), got {strides}")
        grid = grid_best_iou(wh, grid_offsets(boxes, strides, offset=offset, size_divisible=size_divisible), shapes)
        if count_positives:
            positives = grid_positive_counts(boxes, shapes, strides, pos_threshold, offset=offset,
                                             size_divisible=size_divisible)
    result: Dict[str, object] = dict(_summary(centred, grid, positives))
    bucket = size_bucket(wh)
    result["by_size"] = {
        name: _summary(centred[bucket == k], None if grid is None else grid[bucket == k],
                       None if positives is None else positives[bucket == k])
        for k, (name, _, _) in enumerate(SIZE_BUCKETS)}
    return result
