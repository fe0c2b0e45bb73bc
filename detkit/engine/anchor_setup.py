"""Glue between a training data set and the anchor sizing modes (manual / kmeans / learned).

``resolve_anchor_shapes(cfg, train_dataset)`` is what the trainer calls once before building the
detector: it takes the training boxes after the training resize (every scale of
``data.min_size``), runs the configured mode, prints the metric table of the manual set against
the chosen one, and returns the L x A x [w, h] shapes that the trainer stores in
``cfg.model.anchors.shapes`` and in every checkpoint.

Fitting sees the boxes as the RPN will: after the resize, at their positions on each level's
anchor grid, and mirrored as well when the augmentation flips images (``augment.hflip_prob`` /
``vflip_prob`` > 0), since a flipped box sits at another grid offset. The metrics printed are
those of the unflipped training boxes (ANCHORS.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from detkit.config import Config
from detkit.data.loader import resized_annotations
from detkit.modeling.anchor_fit import FitResult, assign_levels, fit_kmeans
from detkit.modeling.anchor_learn import LearnedAnchors, fit_learned
from detkit.modeling.anchor_metrics import BoxSet, evaluate_anchors, grid_offsets
from detkit.modeling.anchors import shapes_from_sizes_ratios, strides_for_features

__all__ = [
    "AnchorModeResult", "collect_training_boxes", "with_flips", "run_anchor_modes", "resolve_anchor_shapes",
    "format_metric_table", "format_shapes", "build_online_refiner", "anchor_geometry", "fit_inputs", "MODES",
]

MODES = ("manual", "kmeans", "learned")


@dataclass
class AnchorModeResult:
    """One sizing mode's outcome: the shapes it would train with, their metrics, and the fit details."""

    mode: str
    shapes: np.ndarray  # (L, A, 2)
    metrics: Dict[str, object]
    fit: Optional[FitResult] = None
    seconds: float = 0.0


def collect_training_boxes(dataset, cfg: Config) -> BoxSet:
    """Every box of `dataset` after the training resize (one entry per image and scale of data.min_size).

    At most ``model.anchors.max_fit_boxes`` boxes are kept (a seeded sample of them beyond that).
    """
    entries = resized_annotations(dataset, cfg.data)
    boxes = BoxSet.from_images([e["boxes"] for e in entries], [e["size"] for e in entries])
    return boxes.subsample(cfg.model.anchors.max_fit_boxes, cfg.model.anchors.seed)


def with_flips(boxes: BoxSet, *, hflip: bool, vflip: bool) -> BoxSet:
    """`boxes` plus their mirror images under every flip (and both flips) the augmentation may apply."""
    sizes = boxes.image_sizes[boxes.image_index].astype(np.float64)  # (N, 2) as (h, w)
    x1, y1, x2, y2 = boxes.boxes.T
    h, w = sizes[:, 0], sizes[:, 1]
    parts = []
    for fx in (False, True) if hflip else (False,):
        for fy in (False, True) if vflip else (False,):
            xs = (w - x2, w - x1) if fx else (x1, x2)
            ys = (h - y2, h - y1) if fy else (y1, y2)
            parts.append(np.stack((xs[0], ys[0], xs[1], ys[1]), axis=1))  # 4 x (N,) -> (N, 4)
    return BoxSet(boxes=np.concatenate(parts), image_index=np.tile(boxes.image_index, len(parts)),
                  image_sizes=boxes.image_sizes)


def fit_inputs(cfg: Config, boxes: BoxSet) -> tuple:
    """What the kmeans and learned fits see: `boxes` plus their mirror images under the configured
    flips, as (wh float64 (N, 2), offsets float64 (N, L, 2) to the nearest anchor centre of every level)."""
    geo = anchor_geometry(cfg)
    aug = cfg.data.augment
    fit_set = with_flips(boxes, hflip=aug.hflip_prob > 0, vflip=aug.vflip_prob > 0)
    return fit_set.wh, grid_offsets(fit_set, geo["strides"], offset=geo["offset"], size_divisible=geo["size_divisible"])


def anchor_geometry(cfg: Config) -> dict:
    """The keyword arguments of the anchor metrics: the feature strides, the anchor offset, size_divisible."""
    return {"strides": strides_for_features(cfg.model.backbone.features), "offset": cfg.model.anchors.offset,
            "size_divisible": cfg.model.size_divisible}


def run_anchor_modes(cfg: Config, boxes: BoxSet, modes: Sequence[str] = MODES,
                     log: Callable[[str], None] = print) -> Dict[str, AnchorModeResult]:
    """Run the given sizing modes on `boxes` (resized training boxes) and measure each.

    manual is sizes x ratios from the config; kmeans starts from manual; learned starts from the
    kmeans result (``learned_init: kmeans``, computed once and shared) or from manual. kmeans and
    learned fall back to the manual set when they do not improve on it.
    """
    a = cfg.model.anchors
    geo = anchor_geometry(cfg)
    strides = geo["strides"]
    manual = np.asarray(shapes_from_sizes_ratios(a.sizes, a.ratios), dtype=np.float64)
    fit_wh, fit_off = fit_inputs(cfg, boxes)
    results: Dict[str, AnchorModeResult] = {}
    kmeans_fit: Optional[FitResult] = None

    def run_kmeans() -> FitResult:
        return fit_kmeans(fit_wh, strides, manual, offsets=fit_off, restarts=a.kmeans_restarts,
                          iters=a.kmeans_iters, hill_climb_steps=a.hill_climb_steps, seed=a.seed)

    for mode in modes:
        start = time.perf_counter()
        fit: Optional[FitResult] = None
        if mode == "manual":
            shapes = manual
        elif mode == "kmeans":
            fit = kmeans_fit = kmeans_fit or run_kmeans()
            shapes = fit.shapes
        elif mode == "learned":
            init = manual
            if a.learned_init == "kmeans":
                kmeans_fit = kmeans_fit or run_kmeans()
                init = kmeans_fit.shapes
            fit = fit_learned(fit_wh, strides, init, offsets=fit_off, baseline_shapes=manual, steps=a.learned_steps,
                              lr=a.learned_lr, temperature=a.learned_temperature, band=a.band, seed=a.seed)
            shapes = fit.shapes
        else:
            raise ValueError(f"unknown anchor mode {mode!r}; valid: {', '.join(MODES)}")
        metrics = evaluate_anchors(shapes, boxes=boxes, **geo)
        results[mode] = AnchorModeResult(mode=mode, shapes=shapes, metrics=metrics, fit=fit,
                                         seconds=time.perf_counter() - start)
        if fit is not None:
            log(f"anchors: {fit.reason} [{results[mode].seconds:.1f} s]")
    return results


_COLUMNS = (("mbiou", "mBIoU"), ("grid_miou", "grid mIoU"), ("recall@0.5", "R@0.5"), ("recall@0.7", "R@0.7"),
            ("below@0.3", "<0.3"), ("pos_per_gt", "pos/GT"))


def format_metric_table(results: Dict[str, AnchorModeResult], by_size: bool = True) -> str:
    """A fixed-width table: one row per mode (and per mode and COCO size bucket when `by_size`)."""
    head = f"{'anchors':<18}{'boxes':>7}" + "".join(f"{title:>11}" for _, title in _COLUMNS)
    lines = [head, "-" * len(head)]

    def row(name: str, m: Dict[str, object]) -> str:
        cells = "".join(f"{m.get(key, float('nan')):>11.3f}" for key, _ in _COLUMNS)
        return f"{name:<18}{m['num_boxes']:>7d}{cells}"

    for mode, res in results.items():
        lines.append(row(mode, res.metrics))
    if by_size:
        for mode, res in results.items():
            for bucket, m in res.metrics["by_size"].items():
                if m["num_boxes"]:
                    lines.append(row(f"  {mode} {bucket}", m))
    return "\n".join(lines)


def format_shapes(shapes: np.ndarray, strides: Sequence[int]) -> str:
    """One line per level: stride and the (w x h) of each anchor, rounded to 0.1 px."""
    return "\n".join(f"  P{int(np.log2(s))} (stride {s:>2}): " + "  ".join(f"{w:.1f}x{h:.1f}" for w, h in level)
                     for s, level in zip(strides, np.asarray(shapes)))


def resolve_anchor_shapes(cfg: Config, train_dataset, log: Callable[[str], None] = print) -> List[List[List[float]]]:
    """The anchor shapes to train with, L x A x [w, h].

    ``model.anchors.shapes`` when already set (a resumed or evaluated run); otherwise the configured
    mode on `train_dataset`'s resized boxes, with a table of the manual set against it.
    """
    a = cfg.model.anchors
    if a.shapes is not None:
        log("anchors: using model.anchors.shapes from the config")
        return [[[float(w), float(h)] for w, h in level] for level in a.shapes]
    boxes = collect_training_boxes(train_dataset, cfg)
    modes = ("manual",) if a.mode == "manual" else ("manual", a.mode)
    results = run_anchor_modes(cfg, boxes, modes, log=log)
    chosen = results[a.mode]
    log(f"anchors: mode '{a.mode}' on {len(boxes)} training boxes (after the training resize)\n"
        + format_metric_table(results, by_size=False))
    log("anchors (w x h per level):\n" + format_shapes(chosen.shapes, anchor_geometry(cfg)["strides"]))
    return [[[float(w), float(h)] for w, h in level] for level in chosen.shapes]


def build_online_refiner(cfg: Config, shapes: Sequence, train_dataset) -> Optional[LearnedAnchors]:
    """A :class:`LearnedAnchors` that continues the learned fit during LR warm-up, or None.

    Only for ``model.anchors.mode: learned`` with ``online_warmup: true``. Levels with fewer than A
    training boxes stay frozen, as in the offline fit. :class:`detkit.engine.online_anchors.OnlineAnchorWarmup`
    steps it on each warm-up batch.
    """
    a = cfg.model.anchors
    if a.mode != "learned" or not a.online_warmup:
        return None
    strides = anchor_geometry(cfg)["strides"]
    shapes = np.asarray(shapes, dtype=np.float64)
    counts = np.bincount(assign_levels(collect_training_boxes(train_dataset, cfg).wh, strides),
                         minlength=len(strides))
    return LearnedAnchors(init_shapes=shapes, strides=strides, band=a.band, lr=a.learned_lr,
                          temperature=a.learned_temperature, frozen_levels=(counts < shapes.shape[1]).tolist(),
                          seed=a.seed)
