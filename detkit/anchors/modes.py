"""The anchor sizing modes (manual / kmeans / learned) on a training set, and the entry point the
trainer calls.

``resolve_anchor_shapes(cfg, train_dataset)`` is what the trainer calls once before building the
detector: it takes the training boxes after the training resize (every scale of
``data.min_size``), runs the configured mode, prints the metric table of the manual set against
the chosen one, and returns the L x A x [w, h] shapes that the trainer stores in
``cfg.model.anchors.shapes`` and in every checkpoint.

The fits see the boxes of :mod:`detkit.anchors.boxes` (resized, on the grid, mirrored under the
configured flips); the metrics printed are those of the unflipped training boxes (ANCHORS.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from detkit.anchors.boxes import anchor_geometry, collect_training_boxes, fit_inputs
from detkit.anchors.fit import FitResult, fit_kmeans
from detkit.anchors.learned import fit_learned
from detkit.anchors.metrics import BoxSet, evaluate_anchors
from detkit.config import Config
from detkit.modeling.anchors import shapes_from_sizes_ratios
from detkit.runtime import distributed as dist

__all__ = ["AnchorModeResult", "run_anchor_modes", "resolve_anchor_shapes", "anchor_shapes_for_training",
           "format_metric_table", "format_shapes", "MODES"]

MODES = ("manual", "kmeans", "learned")


@dataclass
class AnchorModeResult:
    """One sizing mode's outcome: the shapes it would train with, their metrics, and the fit details."""

    mode: str
    shapes: np.ndarray  # (L, A, 2)
    metrics: Dict[str, object]
    fit: Optional[FitResult] = None
    seconds: float = 0.0


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


def anchor_shapes_for_training(cfg: Config, train_dataset, checkpoint: Optional[dict] = None,
                               log: Callable[[str], None] = print) -> List[List[List[float]]]:
    """The anchor shapes a training run builds its detector with, L x A x [w, h]: the checkpoint's
    when resuming, else :func:`resolve_anchor_shapes` (fitted on rank 0 alone and sent to every
    process, so that all of them train the same anchors)."""
    if checkpoint is not None:
        return [[[float(w), float(h)] for w, h in level] for level in checkpoint["anchor_shapes"]]
    if cfg.model.anchors.shapes is not None:
        return resolve_anchor_shapes(cfg, train_dataset, log=log)
    main = dist.get_context().is_main
    return dist.broadcast_object(resolve_anchor_shapes(cfg, train_dataset, log=log) if main else None)
