"""Pictures for people: detections drawn on images (Pillow) and training plots (matplotlib, Agg).

Every plot function writes one PNG and returns its path; none needs a display.
"""

from __future__ import annotations

import colorsys
import os
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

__all__ = ["class_colour", "caption_origin", "draw_caption", "draw_detections", "drawing_style", "drawing_scale",
           "DEFAULT_DRAW_THRESHOLD", "MIN_DRAW_SIDE", "plot_loss_curves", "plot_lr_curve", "plot_pr_curves",
           "plot_confusion_matrix", "write_training_plots"]

DEFAULT_DRAW_THRESHOLD = 0.3  # `detkit infer --draw-threshold`: as the YOLOv5 and Detectron2 demos draw
MIN_DRAW_SIDE = 640  # an image whose longer side is shorter is upscaled to it for drawing

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40), (128, 0, 0)]
_GOLDEN = 0.6180339887498949  # hue step of the generated colours: consecutive hues land far apart


def class_colour(label: int) -> tuple:
    """A stable RGB colour for a class label: the same label gives the same colour in every image and run.

    Labels 1..12 take a hand-picked palette of distinct colours; any other label a colour generated from
    it alone (hues a golden-ratio step apart, alternating saturation and brightness), so 20 or 90 classes
    still get distinct colours.
    """
    index = int(label) - 1
    if 0 <= index < len(_PALETTE):
        return _PALETTE[index]
    step = index - len(_PALETTE) if index >= 0 else -index + 10_000  # labels <= 0: apart from the others
    hue = (0.65 + step * _GOLDEN) % 1.0  # 0.65: the start that keeps 20 classes farthest apart
    saturation = (1.0, 0.5)[step % 2]
    value = (0.95, 0.75)[(step // 2) % 2]
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(hue, saturation, value))


def drawing_scale(width: int, height: int, min_side: int = MIN_DRAW_SIDE) -> float:
    """The factor an image of ``width`` x ``height`` is scaled by for drawing: ``min_side / longer side``
    when the longer side is shorter than ``min_side``, else 1 (large images are never shrunk)."""
    longer = max(int(width), int(height), 1)
    return float(min_side) / longer if 0 < longer < min_side else 1.0


def drawing_style(width: int, height: int) -> tuple:
    """(font size in pixels, line width in pixels) for drawing on a ``width`` x ``height`` canvas: both
    grow with the image (2.5 % and 0.3 % of the geometric mean side), at least 12 and 2 pixels."""
    side = float(np.sqrt(max(int(width), 1) * max(int(height), 1)))
    return max(12, int(round(0.025 * side))), max(2, int(round(0.003 * side)))


def _text_colour(fill: tuple) -> tuple:
    """Black on light fills, white on dark ones (ITU-R BT.601 luma)."""
    return (0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 150 else (255, 255, 255)


def caption_origin(box: tuple, size: tuple, canvas: tuple) -> tuple:
    """Top-left corner of a ``size`` (w, h) caption for ``box`` on a ``canvas`` (W, H): above the box's
    top-left corner; inside the box, under its top side, when there is no room above; moved left where it
    would run off the right edge; always within the canvas when it fits in it."""
    x1, y1, _, y2 = box
    (tw, th), (cw, ch) = size, canvas
    top = y1 - th if y1 - th >= 0 else y1
    top = min(max(0.0, top), max(0.0, ch - th))
    left = min(max(0.0, x1), max(0.0, cw - tw))
    return left, top


def draw_caption(draw: ImageDraw.ImageDraw, box: tuple, text: str, colour: tuple, font, canvas_size: tuple) -> None:
    """``text`` on a ``colour`` band at ``box`` (x1, y1, x2, y2), placed by :func:`caption_origin` so it
    stays inside a ``canvas_size`` (W, H) canvas; black or white text, whichever reads on the band."""
    ascent, descent = font.getmetrics()
    pad = max(1, int(font.size) // 6)
    size = (draw.textlength(text, font=font) + 2 * pad, ascent + descent + pad)
    left, top = caption_origin(box, size, canvas_size)
    draw.rectangle([left, top, left + size[0] - 1, top + size[1] - 1], fill=colour)
    draw.text((left + pad, top), text, fill=_text_colour(colour), font=font)


def _caption(label: int, score: Optional[float], class_names: Sequence[str]) -> str:
    name = class_names[int(label) - 1] if 0 < int(label) <= len(class_names) else str(int(label))
    return name if score is None else f"{name} {float(score):.2f}"


def draw_detections(image: np.ndarray, boxes: np.ndarray, labels: Sequence[int], scores: Optional[Sequence[float]],
                    class_names: Sequence[str], *, min_score: Optional[float] = None,
                    min_side: int = MIN_DRAW_SIDE) -> Image.Image:
    """Draw boxes with "name score" captions, in one fixed colour per class (:func:`class_colour`).

    An image whose longer side is under ``min_side`` pixels is first upscaled to it (bilinear; boxes
    scaled alike), so **the returned image can be larger than the input**; ``min_side=0`` keeps the
    input's size (video frames). Font and line width follow the drawn size (:func:`drawing_style`).
    Captions stay inside the image: above a box, inside it when the box touches the top edge, shifted
    left at the right edge. Lower scores are drawn first, so the best captions end up on top.

    Args:
        image: (H, W, 3) uint8 RGB. boxes: (D, 4) xyxy in the image's pixels. labels: (D,) in 1..K.
        scores: (D,) or None. class_names: K names (label i -> class_names[i-1]).
        min_score: draw only detections scoring at least this (ignored when ``scores`` is None).
        min_side: upscale images whose longer side is shorter than this (0: never).
    """
    canvas = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    scale = drawing_scale(*canvas.size, min_side=min_side)
    if scale != 1.0:
        canvas = canvas.resize((int(round(canvas.width * scale)), int(round(canvas.height * scale))),
                               Image.Resampling.BILINEAR)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale
    order = range(len(boxes)) if scores is None else np.argsort(np.asarray(scores, dtype=np.float64), kind="stable")
    draw = ImageDraw.Draw(canvas)
    font_size, width = drawing_style(*canvas.size)
    font = ImageFont.load_default(size=font_size)
    for d in order:
        score = None if scores is None else float(scores[d])
        if score is not None and min_score is not None and score < min_score:
            continue
        colour = class_colour(labels[d])
        x1, y1, x2, y2 = (float(v) for v in boxes[d])
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=width)
        draw_caption(draw, (x1, y1, x2, y2), _caption(labels[d], score, class_names), colour, font, canvas.size)
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
