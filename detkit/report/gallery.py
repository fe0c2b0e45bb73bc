"""The error-analysis gallery: validation images with their detections marked by outcome, worst first.

Each image is drawn at a readable size (small images upscaled, large ones brought down to
:data:`MAX_SIDE`) with: true positives in green; false positives in the colour of their kind
(duplicate, wrong class, poor localisation, background) with the kind in the caption; objects that no
detection above the threshold found as dashed boxes captioned "missed"; ignore regions dashed grey. The
images are embedded as JPEG data URIs, so the report is one file.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detkit.data.image_io import read_image
from detkit.errors import DataError
from detkit.report.error_analysis import ERROR_KINDS, ImageErrors
from detkit.vis import draw_caption, drawing_style

__all__ = ["KIND_COLOURS", "KIND_NAMES", "GalleryItem", "select_worst", "gallery_item", "draw_errors", "build_gallery",
           "jpeg_data_uri"]

MAX_SIDE = 960  # larger images are brought down to this longer side: the page stays a few MB
MIN_SIDE = 480  # smaller ones are brought up to it: boxes and captions stay readable

KIND_COLOURS: Dict[str, tuple] = {
    "tp": (34, 160, 70), "duplicate": (150, 90, 230), "wrong_class": (230, 40, 160),
    "localisation": (240, 150, 0), "background": (220, 30, 30), "missed": (0, 170, 230), "ignored": (150, 150, 150),
}
KIND_NAMES: Dict[str, str] = {
    "tp": "true positive", "duplicate": "duplicate", "wrong_class": "wrong class",
    "localisation": "poor localisation", "background": "background", "missed": "missed", "ignored": "ignore region",
}


@dataclass
class GalleryItem:
    """One gallery card: the drawn image and what the filters and captions need.

    Attributes:
        file_name: the image's file name. image: its drawing as a JPEG data URI.
        counts: detections of each kind at or above the threshold, plus ``missed`` and ``objects``.
        errors: false positives plus missed objects. kinds: the error kinds present (and "missed").
        labels: the class labels (1..K) present in its ground truth or shown detections.
    """

    file_name: str
    image: str
    counts: Dict[str, int]
    errors: int
    kinds: List[str]
    labels: List[int]


def select_worst(analysis: Sequence[ImageErrors], threshold: float, limit: int) -> List[ImageErrors]:
    """The ``limit`` images with the most errors at ``threshold`` (ties: more objects first, then by name)."""
    ranked = sorted(analysis, key=lambda e: (-e.error_count(threshold), -len(e.gt_labels), e.file_name))
    return ranked[:max(0, limit)]


def _scale_for(width: int, height: int) -> float:
    longer = max(width, height, 1)
    if longer > MAX_SIDE:
        return MAX_SIDE / longer
    return MIN_SIDE / longer if longer < MIN_SIDE else 1.0


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], colour: tuple, width: int) -> None:
    x1, y1, x2, y2 = box
    dash = max(4, 3 * width)
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = float(np.hypot(bx - ax, by - ay))
        for start in np.arange(0.0, length, 2 * dash):
            t0, t1 = start / max(length, 1e-9), min(start + dash, length) / max(length, 1e-9)
            draw.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)],
                      fill=colour, width=width)


def draw_errors(image: np.ndarray, errors: ImageErrors, classes: Sequence[str], threshold: float) -> Image.Image:
    """``image`` (H, W, 3) uint8 RGB with ``errors`` drawn (detections at or above ``threshold``)."""
    canvas = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    scale = _scale_for(*canvas.size)
    if scale != 1.0:
        canvas = canvas.resize((max(1, round(canvas.width * scale)), max(1, round(canvas.height * scale))),
                               Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    font_size, width = drawing_style(*canvas.size)
    font = ImageFont.load_default(size=font_size)

    def name(label: int) -> str:
        return classes[label - 1] if 0 < label <= len(classes) else str(label)

    for box in errors.ignore_boxes * scale:
        _dashed_rectangle(draw, box, KIND_COLOURS["ignored"], max(1, width // 2))
    missed = errors.missed(threshold)
    for box, label, is_missed in zip(errors.gt_boxes * scale, errors.gt_labels, missed):
        if is_missed:
            _dashed_rectangle(draw, box, KIND_COLOURS["missed"], width)
            draw_caption(draw, tuple(box), f"missed {name(int(label))}", KIND_COLOURS["missed"], font, canvas.size)
    shown = errors.shown(threshold)[::-1]  # lowest score first: the best captions end on top
    for d in shown:
        kind = errors.kinds[d]
        colour = KIND_COLOURS.get(kind, KIND_COLOURS["ignored"])
        box = tuple(float(v) for v in errors.boxes[d] * scale)
        draw.rectangle([box[0], box[1], max(box[0], box[2]), max(box[1], box[3])], outline=colour, width=width)
        text = f"{name(int(errors.labels[d]))} {errors.scores[d]:.2f}"
        if kind != "tp":
            text += f" {KIND_NAMES.get(kind, kind)}"
        draw_caption(draw, box, text, colour, font, canvas.size)
    return canvas


def jpeg_data_uri(picture: Image.Image) -> str:
    """A drawing as a JPEG data URI (quality 85: a few tens of kB a picture)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def gallery_item(path: str, errors: ImageErrors, classes: Sequence[str], threshold: float) -> GalleryItem:
    """The card of one image (``path``: its file).

    Raises:
        DataError: the image cannot be read (the caller lists it and goes on).
    """
    picture = draw_errors(read_image(path), errors, classes, threshold)
    counts = errors.counts(threshold)
    kinds = [kind for kind in ERROR_KINDS if counts[kind]] + (["missed"] if counts["missed"] else [])
    labels = sorted({int(v) for v in errors.gt_labels} | {int(errors.labels[d]) for d in errors.shown(threshold)})
    return GalleryItem(file_name=errors.file_name or str(errors.image_id), image=jpeg_data_uri(picture),
                       counts=counts, errors=errors.error_count(threshold), kinds=kinds, labels=labels)


def build_gallery(paths: Dict[int, str], analysis: Sequence[ImageErrors], classes: Sequence[str],
                  threshold: float, limit: int) -> tuple:
    """Cards of the ``limit`` worst images: (items, problems) where problems lists the images that
    could not be read, as "file: reason" lines. ``paths`` maps image_id -> image file."""
    items, problems = [], []
    for errors in select_worst(analysis, threshold, limit):
        path = paths.get(errors.image_id)
        if path is None:
            problems.append(f"{errors.file_name}: not in the validation split any more")
            continue
        try:
            items.append(gallery_item(path, errors, classes, threshold))
        except DataError as exc:
            problems.append(str(exc))
    return items, problems
