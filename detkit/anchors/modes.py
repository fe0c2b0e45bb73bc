"""The anchor sizing modes (manual / kmeans / learned) on a training set.

``fit_anchor_shapes(setup, train_dataset)`` is the fit a training run asks for (through
:func:`detkit.modeling.anchors.resolve_anchor_shapes`, the one place that decides where a run's
shapes come from): it takes the training boxes after the training resize (every scale of
``data.min_size``), runs the configured mode, prints the metric table of the manual set against
the chosen one, and returns the L x A x [w, h] shapes. It returns them and nothing else: the
trainer sends them to every process, keeps them in the run's state and writes them into
config.yaml and every checkpoint.

The fits see the boxes of :mod:`detkit.anchors.boxes` (resized, on the grid, mirrored under the
configured flips); the metrics printed are those of the unflipped training boxes (docs/anchors.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from detkit.anchors.boxes import collect_training_boxes, fit_inputs
from detkit.anchors.fit import FitResult, fit_kmeans
from detkit.anchors.learned import fit_learned
from detkit.anchors.metrics import BoxSet, evaluate_anchors
from detkit.anchors.setup import AnchorSetup
from detkit.modeling.anchors import shapes_from_sizes_ratios

__all__ = ["AnchorModeResult", "run_anchor_modes", "fit_anchor_shapes", "format_metric_table", "format_shapes",
           "MODES"]

MODES = ("manual", "kmeans", "learned")


@dataclass
class AnchorModeResult:
    """One sizing mode's outcome: the shapes it would train with, their metrics, and the fit details."""

    mode: str
    shapes: np.ndarray  # (L, A, 2)
    metrics: Dict[str, object]
    fit: Optional[FitResult] = None
    seconds: float = 0.0


def run_anchor_modes(setup: AnchorSetup, boxes: BoxSet, modes: Sequence[str] = MODES,
                     log: Callable[[str], None] = print) -> Dict[str, AnchorModeResult]:
    """Run the given sizing modes on `boxes` (resized training boxes) and measure each.

    manual is sizes x ratios from the config; kmeans starts from manual; learned starts from the
    kmeans result (``learned_init: kmeans``, computed once and shared) or from manual. kmeans and
    learned fall back to the manual set when they do not improve on it.
    """
    a = setup.settings
    geo = setup.grid()
    strides = geo["strides"]
    manual = np.asarray(shapes_from_sizes_ratios(a.sizes, a.ratios), dtype=np.float64)
    fit_wh, fit_off = fit_inputs(setup, boxes)
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


def fit_anchor_shapes(setup: AnchorSetup, train_dataset, log: Callable[[str], None] = print
                      ) -> List[List[List[float]]]:
    """The shapes the configured mode gives on `train_dataset`'s resized boxes, L x A x [w, h], with a
    table of the manual set against them (mode manual: the manual set and its table)."""
    a = setup.settings
    boxes = collect_training_boxes(train_dataset, setup)
    modes = ("manual",) if a.mode == "manual" else ("manual", a.mode)
    results = run_anchor_modes(setup, boxes, modes, log=log)
    chosen = results[a.mode]
    log(f"anchors: mode '{a.mode}' on {len(boxes)} training boxes (after the training resize)\n"
        + format_metric_table(results, by_size=False))
    log("anchors (w x h per level):\n" + format_shapes(chosen.shapes, setup.strides))
    return [[[float(w), float(h)] for w, h in level] for level in chosen.shapes]
