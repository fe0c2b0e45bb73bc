"""The anchor report behind `detkit anchors`: every sizing mode on the training split, as a table,
``anchors.json`` and a PNG (the boxes' w-h scatter on log axes, each level's anchors in its colour)."""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Dict, Optional

import numpy as np

from detkit.anchors.boxes import collect_training_boxes
from detkit.anchors.metrics import evaluate_anchors
from detkit.anchors.modes import MODES, AnchorModeResult, format_metric_table, format_shapes, run_anchor_modes
from detkit.anchors.setup import AnchorSetup
from detkit.atomic_io import write_json_atomic
from detkit.config import Config
from detkit.data.formats import build_dataset

__all__ = ["mode_summary", "plot_anchor_fit", "anchor_report", "run_anchor_summary"]

_METRIC_KEYS = ("mbiou", "grid_miou", "recall@0.5", "recall@0.7", "below@0.3", "pos_per_gt")


def _clean(value):
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def mode_summary(result: AnchorModeResult) -> Dict[str, object]:
    """The JSON entry of one mode: the six metrics, ``shapes`` (L x A x [w, h]) and details."""
    out: Dict[str, object] = {key: result.metrics.get(key) for key in _METRIC_KEYS}
    out["shapes"] = [[[round(float(w), 3), round(float(h), 3)] for w, h in level] for level in result.shapes]
    out["num_boxes"] = result.metrics["num_boxes"]
    out["by_size"] = result.metrics["by_size"]
    if result.fit is not None:
        out["adopted"] = result.fit.adopted
        out["reason"] = result.fit.reason
    out["seconds"] = round(result.seconds, 2)
    return _clean(out)


def plot_anchor_fit(box_wh: np.ndarray, results: Dict[str, AnchorModeResult], strides, path: str) -> None:
    """One panel per mode: training boxes' (w, h) on log axes, each level's anchors in its own colour."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 5), squeeze=False, sharex=True, sharey=True)
    colours = plt.get_cmap("tab10")
    wh = np.maximum(np.asarray(box_wh, dtype=np.float64).reshape(-1, 2), 1e-1)
    for ax, (mode, res) in zip(axes[0], results.items()):
        ax.scatter(wh[:, 0], wh[:, 1], s=4, c="0.6", alpha=0.4, linewidths=0, label="training boxes")
        for level, (stride, shapes) in enumerate(zip(strides, res.shapes)):
            ax.scatter(shapes[:, 0], shapes[:, 1], s=70, marker="X", color=colours(level), edgecolors="k",
                       linewidths=0.6, label=f"P{int(np.log2(stride))} (stride {stride})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(ticker.NullFormatter())
        m = res.metrics
        ax.set_title(f"{mode}: mBIoU {m['mbiou']:.3f}, grid R@0.7 {m.get('recall@0.7', float('nan')):.3f}")
        ax.set_xlabel("width (px, after resize)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("height (px, after resize)")
    axes[0][0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def anchor_report(cfg: Config, *, output_dir: str, json_path: Optional[str] = None, dataset=None,
                  log: Callable[[str], None] = print) -> Dict[str, Dict[str, object]]:
    """Run manual, kmeans and learned on the configured training split and report them.

    Prints the metric table (overall and by COCO size bucket) and each mode's shapes per level;
    writes ``<output_dir>/anchors.json``, ``<output_dir>/anchors.png`` and, when given, `json_path`.

    Returns:
        ``{"manual": {...}, "kmeans": {...}, "learned": {...}}``, each with mbiou, grid_miou,
        recall@0.5, recall@0.7, below@0.3, pos_per_gt, shapes (and num_boxes, by_size, adopted, reason).
    """
    start = time.perf_counter()
    if dataset is None:
        dataset = build_dataset(cfg, "train")
    setup = AnchorSetup.from_config(cfg)
    boxes = collect_training_boxes(dataset, setup)
    strides = list(setup.strides)
    scales = ", ".join(str(s) for s in setup.min_size)
    log(f"anchors: {len(boxes)} training boxes in {len(dataset)} images, resized to shorter side {scales} "
        f"(longer side <= {setup.max_size}); strides {strides}, offset {setup.offset}")
    results = run_anchor_modes(setup, boxes, MODES, log=log)
    log(format_metric_table(results))
    for mode, res in results.items():
        log(f"{mode} anchors (w x h):\n" + format_shapes(res.shapes, strides))
    report = {mode: mode_summary(res) for mode, res in results.items()}
    write_json_atomic(report, os.path.join(output_dir, "anchors.json"))
    if json_path:
        write_json_atomic(report, json_path)
    plot_anchor_fit(boxes.wh, results, strides, os.path.join(output_dir, "anchors.png"))
    log(f"wrote {os.path.join(output_dir, 'anchors.json')} and anchors.png"
        + (f" and {json_path}" if json_path else "") + f" in {time.perf_counter() - start:.1f} s")
    return report


def run_anchor_summary(setup: AnchorSetup, dataset, shapes, *, max_plot_boxes: int = 4000,
                       seed: int = 0) -> Dict[str, object]:
    """What a run report shows of its anchors: the run's shapes measured on its training boxes.

    Args:
        setup: the run's anchor setup (strides, training resize); dataset: its training split.
        shapes: the shapes the run trains with, L x A x [w, h].
        max_plot_boxes: at most this many training boxes' (w, h) are kept for the scatter plot (a
            seeded random subset), so that the summary stays small on COCO-sized sets.
    Returns:
        ``{"strides": L ints, "shapes": L x A x [w, h], "metrics": the six metrics and num_boxes,
        "by_size": per COCO size bucket, "box_wh": up to max_plot_boxes [w, h] pairs}`` (JSON-ready).
    """
    boxes = collect_training_boxes(dataset, setup)
    metrics = evaluate_anchors(np.asarray(shapes, dtype=np.float64), boxes=boxes, **setup.grid())
    wh = np.asarray(boxes.wh, dtype=np.float64).reshape(-1, 2)
    if len(wh) > max_plot_boxes:
        wh = wh[np.sort(np.random.default_rng(seed).choice(len(wh), max_plot_boxes, replace=False))]
    summary = {key: metrics.get(key) for key in _METRIC_KEYS}
    summary["num_boxes"] = metrics["num_boxes"]
    return _clean({"strides": list(setup.strides), "shapes": [[[float(w), float(h)] for w, h in level]
                                                               for level in np.asarray(shapes)],
                   "metrics": summary, "by_size": metrics["by_size"],
                   "box_wh": [[round(float(w), 2), round(float(h), 2)] for w, h in wh]})
