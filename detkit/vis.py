"""Pictures for people: detections drawn on images (Pillow) and training plots (matplotlib, Agg).

Every plot function writes one PNG and returns its path; none needs a display.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

__all__ = ["class_colour", "draw_detections", "plot_loss_curves", "plot_lr_curve", "plot_pr_curves",
           "plot_confusion_matrix", "write_training_plots"]

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0)]


def class_colour(label: int) -> tuple:
    """A stable, distinct RGB colour for a class label."""
    return _PALETTE[(int(label) - 1) % len(_PALETTE)]


def draw_detections(image: np.ndarray, boxes: np.ndarray, labels: Sequence[int], scores: Optional[Sequence[float]],
                    class_names: Sequence[str]) -> Image.Image:
    """Draw boxes with "name score" captions.

    Args:
        image: (H, W, 3) uint8 RGB. boxes: (D, 4) xyxy in the image's pixels. labels: (D,) in 1..K.
        scores: (D,) or None. class_names: K names (label i -> class_names[i-1]).
    """
    canvas = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    width = max(1, round(max(canvas.size) / 400))
    for d, (box, label) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), labels)):
        colour = class_colour(label)
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
        name = class_names[int(label) - 1] if 0 < int(label) <= len(class_names) else str(int(label))
        caption = name if scores is None else f"{name} {float(scores[d]):.2f}"
        left, top, right, bottom = draw.textbbox((x1, y1), caption, font=font)
        text_top = max(0.0, y1 - (bottom - top) - 2)
        draw.rectangle([x1, text_top, x1 + (right - left) + 4, text_top + (bottom - top) + 2], fill=colour)
        draw.text((x1 + 2, text_top), caption, fill=(255, 255, 255), font=font)
    return canvas


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_loss_curves(records: Sequence[dict], path: str) -> str:
    """Each loss term and the total against the iteration (training records), plus validation loss."""
    train = [r for r in records if r.get("type") == "train"]
    fig, ax = plt.subplots(figsize=(7, 4))
    keys = sorted({k for r in train for k in r if k.startswith("loss")})
    for key in keys:
        points = [(r["iteration"], r[key]) for r in train if key in r]
        if points:
            ax.plot(*zip(*points), label=key)
    val = [(r["iteration"], r["val_loss"]) for r in records if r.get("type") == "eval" and "val_loss" in r]
    if val:
        ax.plot(*zip(*val), "o--", label="val_loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if keys or val:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_lr_curve(records: Sequence[dict], path: str) -> str:
    """The learning rate against the iteration."""
    points = [(r["iteration"], r["lr"]) for r in records if r.get("type") == "train" and "lr" in r]
    fig, ax = plt.subplots(figsize=(7, 3))
    if points:
        ax.plot(*zip(*points))
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_pr_curves(pr_curves: dict, path: str) -> str:
    """Per-class precision-recall curves at IoU 0.5 (101 recall points from COCOeval)."""
    fig, ax = plt.subplots(figsize=(6, 5))
    recall = np.linspace(0, 1, 101)
    for k, (name, precision) in enumerate(pr_curves.items(), start=1):
        ap = float(np.mean(precision))
        ax.plot(recall, precision, color=np.array(class_colour(k)) / 255, label=f"{name} (AP50 {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if pr_curves:
        ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str) -> str:
    """Confusion matrix with a background row and column (index 0), rows = truth, columns = prediction."""
    matrix = np.asarray(matrix)
    names = ["background"] + list(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 1.0 * len(names) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max() if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    return _save(fig, path)


def write_training_plots(output_dir: str, records: Sequence[dict], eval_metrics: Optional[dict],
                         class_names: Sequence[str]) -> list[str]:
    """All plots of a run into ``output_dir/plots`` from its metrics.jsonl ``records`` and final
    evaluation; returns the paths written."""
    plots = os.path.join(output_dir, "plots")
    paths = [plot_loss_curves(records, os.path.join(plots, "loss.png")),
             plot_lr_curve(records, os.path.join(plots, "lr.png"))]
    if eval_metrics:
        paths.append(plot_pr_curves(eval_metrics.get("pr_curves", {}), os.path.join(plots, "pr_curves.png")))
        if "confusion_matrix" in eval_metrics:
            paths.append(plot_confusion_matrix(eval_metrics["confusion_matrix"], class_names,
                                               os.path.join(plots, "confusion_matrix.png")))
    return paths
