"""The report's figures as PNG data URIs, so that report.html carries them inside itself.

The plots of one run are detkit.vis's (the same pictures as plots/*.png); the overlays of two runs and
the mAP curve are drawn here. Every function returns ``data:image/png;base64,...`` or None when the run
has nothing to plot.
"""

from __future__ import annotations

import base64
import os
import tempfile
from typing import Callable, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from detkit.anchors.modes import AnchorModeResult  # noqa: E402
from detkit.anchors.report import plot_anchor_fit  # noqa: E402
from detkit.vis import plot_confusion_matrix, plot_loss_curves, plot_lr_curve, plot_pr_curves  # noqa: E402

__all__ = ["png_data_uri", "loss_figure", "lr_figure", "map_figure", "pr_figure", "confusion_figure",
           "anchor_figure", "overlay_figure"]


def png_data_uri(data: bytes) -> str:
    """PNG bytes as a data URI (what an <img src> takes without a file beside the page)."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _via_file(plot: Callable[[str], object]) -> str:
    """Run ``plot(path)`` (a detkit.vis function that writes a PNG) and return the PNG as a data URI."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "figure.png")
        plot(path)
        with open(path, "rb") as f:
            return png_data_uri(f.read())


def _figure_uri(fig) -> str:
    return _via_file(lambda path: (fig.tight_layout(), fig.savefig(path, dpi=100), plt.close(fig)))


def loss_figure(records: Sequence[dict]) -> Optional[str]:
    """Each loss term against the iteration (and the validation loss)."""
    if not any(r.get("type") == "train" for r in records):
        return None
    return _via_file(lambda path: plot_loss_curves(records, path))


def lr_figure(records: Sequence[dict]) -> Optional[str]:
    """The learning rate against the iteration."""
    if not any(r.get("type") == "train" and "lr" in r for r in records):
        return None
    return _via_file(lambda path: plot_lr_curve(records, path))


def map_figure(records: Sequence[dict]) -> Optional[str]:
    """mAP, AP50 and AP75 of every evaluation against the epoch."""
    evals = [r for r in records if r.get("type") == "eval" and "mAP" in r]
    if not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for key in ("mAP", "AP50", "AP75"):
        ax.plot([r["epoch"] for r in evals], [r.get(key, np.nan) for r in evals], "o-", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation AP")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _figure_uri(fig)


def pr_figure(eval_metrics: Optional[dict]) -> Optional[str]:
    """Per-class precision-recall curves at IoU 0.5 of the final evaluation."""
    curves = (eval_metrics or {}).get("pr_curves")
    if not isinstance(curves, dict) or not curves:
        return None
    return _via_file(lambda path: plot_pr_curves(curves, path))


def confusion_figure(eval_metrics: Optional[dict], classes: Sequence[str]) -> Optional[str]:
    """The confusion matrix of the final evaluation (background row and column first)."""
    matrix = (eval_metrics or {}).get("confusion_matrix")
    if not matrix or len(matrix) != len(classes) + 1:
        return None
    return _via_file(lambda path: plot_confusion_matrix(np.asarray(matrix), classes, path))


def anchor_figure(anchors: Optional[dict]) -> Optional[str]:
    """The training boxes' (w, h) and the run's anchors per level (setup.json's ``anchors``)."""
    if not anchors or not anchors.get("shapes"):
        return None
    metrics = dict(anchors.get("metrics") or {})
    metrics = {k: (np.nan if v is None else v) for k, v in metrics.items()}
    metrics.setdefault("mbiou", np.nan)
    result = AnchorModeResult(mode="run", shapes=np.asarray(anchors["shapes"], dtype=np.float64), metrics=metrics)
    wh = np.asarray(anchors.get("box_wh") or np.zeros((0, 2)), dtype=np.float64).reshape(-1, 2)
    return _via_file(lambda path: plot_anchor_fit(wh, {"this run": result}, anchors["strides"], path))


def overlay_figure(series: Sequence[tuple], *, xlabel: str, ylabel: str, log_y: bool = False) -> Optional[str]:
    """Lines of several runs on one axes: ``series`` holds (label, xs, ys) triples."""
    series = [(label, xs, ys) for label, xs, ys in series if len(xs)]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for label, xs, ys in series:
        ax.plot(xs, ys, "o-" if len(xs) < 40 else "-", label=label, markersize=4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _figure_uri(fig)
