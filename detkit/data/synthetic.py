"""The built-in synthetic shapes data set: deterministic images + COCO JSON, generated into a cache.

Each image is a textured, noisy background (a random base colour, a smooth low-frequency colour
field, faint stripes and per-pixel noise) with 1..``max_objects`` shapes, or none for a fixed
share (``empty_fraction``) of the images. Shapes are circles (ellipses), squares (axis-aligned
rectangles) and triangles (apex at the middle of one side of the box, base on the opposite side,
pointing up, down, left or right), drawn anti-aliased, so each class fills its box differently
(about 79 %, 100 % and 50 %). Sizes are log-uniform from 12 px to half the image (sqrt of the
box area), aspect ratios h / w log-uniform in [1/2, 2] (sides kept within [10 px, half the image]),
colours chosen to contrast with the background under the box; objects may overlap (IoU <= 0.35
and at most half of the smaller box covered), later ones drawn over earlier ones. Boxes are the
exact analytic extent of each shape (continuous coordinates), so they are tight and inside the image.

Determinism: every image is drawn from its own ``np.random.default_rng([seed, split, index])``,
and the images are written as PNG, so the same parameters give byte-identical JSON and images.

Cache: ``<cache_dir>/<hash of the parameters>/`` holds ``train.json``, ``val.json``, the images
in ``train/`` and ``val/``, ``params.json`` and a ``COMPLETE`` marker. It is generated in a
temporary folder and renamed into place (atomic), so a half-written cache is never used; a
folder without the marker or with different parameters is regenerated. Different parameters
hash to a different folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from detkit.config import SyntheticConfig
from detkit.errors import ConfigError, DataError

__all__ = ["SYNTHETIC_CLASSES", "GENERATOR_VERSION", "prepare_synthetic", "synthetic_params",
           "render_image", "synthetic_cache_dir"]

SYNTHETIC_CLASSES = ["circle", "square", "triangle"]
# Bump when the drawing code changes, so that caches made by older code are not reused.
GENERATOR_VERSION = 2

_SPLITS = ("train", "val")
_SUPERSAMPLE = 4  # sub-pixel samples per side for anti-aliased coverage
_MIN_COLOUR_DISTANCE = 120.0  # RGB distance between an object and the background under it
_MAX_IOU = 0.35
_MAX_COVERED = 0.5


def synthetic_params(cfg: SyntheticConfig, classes: Optional[Sequence[str]] = None) -> dict:
    """The parameters that determine the generated files (hashed into the cache folder name)."""
    classes = list(SYNTHETIC_CLASSES if classes is None else classes)
    unknown = [c for c in classes if c not in SYNTHETIC_CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise ConfigError(f"key 'data.classes' = {classes} is not valid for data.format = 'synthetic'; "
                          f"use distinct names among {SYNTHETIC_CLASSES} (or null for all of them)")
    return {"version": GENERATOR_VERSION, "classes": classes, "num_train": cfg.num_train,
            "num_val": cfg.num_val, "image_size": cfg.image_size, "max_objects": cfg.max_objects,
            "empty_fraction": cfg.empty_fraction, "seed": cfg.seed}


def synthetic_cache_dir(cfg: SyntheticConfig, classes: Optional[Sequence[str]] = None) -> str:
    """``<cache_dir>/<hash>``: where the set for these parameters lives."""
    params = synthetic_params(cfg, classes)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser(cfg.cache_dir), key)


# --------------------------------------------------------------------------- drawing
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float64 textured background in [0, 255]."""
    base = rng.uniform(40.0, 215.0, size=3)
    coarse = rng.normal(0.0, 22.0, size=(4, 4, 3)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float64)
    img = base[None, None, :] + field
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    for _ in range(int(rng.integers(0, 4))):  # faint stripes: texture, not objects
        angle, period = rng.uniform(0, np.pi), rng.uniform(6.0, 24.0)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
        img += rng.uniform(3.0, 8.0) * np.sin(phase)[:, :, None] * rng.choice([-1.0, 1.0], size=3)
    return img


def _inside(kind: str, orient: int, box: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of the points (x, y) inside the shape inscribed in box (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    if kind == "square":
        return (x >= x1) & (x <= x2) & (y >= y1) & (y <= y2)
    if kind == "circle":
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0
    # triangle: t runs from the apex side (0) to the base side (1); half-width grows with t
    if orient in (0, 1):  # apex up / down
        t = (y - y1) / (y2 - y1) if orient == 0 else (y2 - y) / (y2 - y1)
        return (t >= 0) & (t <= 1) & (np.abs(x - (x1 + x2) / 2) <= t * (x2 - x1) / 2)
    t = (x - x1) / (x2 - x1) if orient == 2 else (x2 - x) / (x2 - x1)
    return (t >= 0) & (t <= 1) & (np.abs(y - (y1 + y2) / 2) <= t * (y2 - y1) / 2)


def _paint(img: np.ndarray, kind: str, orient: int, box: np.ndarray, colour: np.ndarray) -> None:
    """Alpha-blend the anti-aliased shape into img (in place)."""
    h, w = img.shape[:2]
    c0, r0 = int(np.floor(box[0])), int(np.floor(box[1]))
    c1, r1 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    offsets = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE
    xs = (np.arange(c0, c1)[:, None] + offsets[None, :]).reshape(-1)  # (W*s,)
    ys = (np.arange(r0, r1)[:, None] + offsets[None, :]).reshape(-1)  # (H*s,)
    inside = _inside(kind, orient, box, xs[None, :], ys[:, None])  # (H*s, W*s)
    # (H*s, W*s) -> (H, s, W, s) -> coverage (H, W)
    alpha = inside.reshape(r1 - r0, _SUPERSAMPLE, c1 - c0, _SUPERSAMPLE).mean(axis=(1, 3))[:, :, None]
    region = img[r0:r1, c0:c1]
    img[r0:r1, c0:c1] = region * (1.0 - alpha) + colour[None, None, :] * alpha


def _place(rng: np.random.Generator, size: int, placed: List[np.ndarray]) -> Optional[np.ndarray]:
    """A random box that overlaps the placed ones only moderately, or None after 30 tries."""
    lo, hi = 12.0, size / 2.0
    for _ in range(30):
        s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        ratio = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        bw = float(np.clip(s / np.sqrt(ratio), 10.0, hi))
        bh = float(np.clip(s * np.sqrt(ratio), 10.0, hi))
        x1, y1 = rng.uniform(0.0, size - bw), rng.uniform(0.0, size - bh)
        box = np.round(np.array([x1, y1, x1 + bw, y1 + bh]), 3)
        ok = True
        for other in placed:
            iw = min(box[2], other[2]) - max(box[0], other[0])
            ih = min(box[3], other[3]) - max(box[1], other[1])
            inter = max(iw, 0.0) * max(ih, 0.0)
            a, b = bw * bh, (other[2] - other[0]) * (other[3] - other[1])
            if inter / (a + b - inter) > _MAX_IOU or inter / min(a, b) > _MAX_COVERED:
                ok = False
                break
        if ok:
            return box
    return None


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random RGB colour at least _MIN_COLOUR_DISTANCE from `under` (or the farthest of 50 tries)."""
    best, best_d = None, -1.0
    for _ in range(50):
        colour = rng.uniform(0.0, 255.0, size=3)
        d = float(np.linalg.norm(colour - under))
        if d >= _MIN_COLOUR_DISTANCE:
            return colour
        if d > best_d:
            best, best_d = colour, d
    return best


def render_image(rng: np.random.Generator, *, image_size: int, num_objects: int,
                 classes: Sequence[str] = SYNTHETIC_CLASSES) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image with up to `num_objects` shapes of the given classes (names of SYNTHETIC_CLASSES).

    Returns:
        image (S, S, 3) uint8 RGB, boxes float64 (N, 4) x1, y1, x2, y2 (N <= num_objects, fewer
        when a crowded image leaves no room), labels int64 (N,) in 1..len(classes).
    """
    img = _background(rng, image_size)
    boxes, labels = [], []
    for _ in range(num_objects):
        box = _place(rng, image_size, boxes)
        if box is None:
            continue
        label = int(rng.integers(0, len(classes)))
        orient = int(rng.integers(0, 4))
        r0, r1 = int(box[1]), int(np.ceil(box[3]))
        c0, c1 = int(box[0]), int(np.ceil(box[2]))
        colour = _contrasting_colour(rng, img[r0:r1, c0:c1].reshape(-1, 3).mean(axis=0))
        boxes.append(box)
        labels.append(label + 1)
        _paint(img, classes[label], orient, box, colour)
    img += rng.normal(0.0, 4.0, size=img.shape)
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return image, np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(labels, dtype=np.int64)



# --------------------------------------------------------------------------- files
def _write_png(path: str, image: np.ndarray) -> None:
    # Fixed settings and no metadata, so the bytes depend on the pixels only.
    Image.fromarray(image).save(path, format="PNG", compress_level=1, optimize=False)


def _generate_split(folder: str, split_index: int, params: dict) -> dict:
    """Write the images of one split into folder/<split>/ and return its COCO dict."""
    split = _SPLITS[split_index]
    n = params["num_train"] if split == "train" else params["num_val"]
    size, classes = params["image_size"], params["classes"]
    os.makedirs(os.path.join(folder, split))
    split_rng = np.random.default_rng([params["seed"], split_index, 2**31])
    empty = set(split_rng.choice(n, size=int(round(params["empty_fraction"] * n)), replace=False).tolist())
    images, annotations = [], []
    for i in range(n):
        rng = np.random.default_rng([params["seed"], split_index, i])
        num_objects = 0 if i in empty else int(rng.integers(1, params["max_objects"] + 1))
        image, boxes, labels = render_image(rng, image_size=size, num_objects=num_objects, classes=classes)
        file_name = f"{split}_{i:06d}.png"
        _write_png(os.path.join(folder, split, file_name), image)
        images.append({"id": i + 1, "file_name": file_name, "width": size, "height": size})
        for box, label in zip(boxes.tolist(), labels.tolist()):
            w, h = round(box[2] - box[0], 3), round(box[3] - box[1], 3)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label,
                                "bbox": [box[0], box[1], w, h], "area": round(w * h, 3), "iscrowd": 0})
    categories = [{"id": k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(classes)]
    return {"info": {"description": f"detkit synthetic shapes, {split}", "params": params},
            "images": images, "annotations": annotations, "categories": categories}


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, sort_keys=True, separators=(",", ":"))


def _is_complete(folder: str, params: dict) -> bool:
    """True when folder holds a finished set generated with exactly these parameters."""
    try:
        with open(os.path.join(folder, "params.json"), "r", encoding="utf-8") as f:
            if json.load(f) != params:
                return False
        if not os.path.isfile(os.path.join(folder, "COMPLETE")):
            return False
        for split in _SPLITS:
            expected = params["num_train"] if split == "train" else params["num_val"]
            if not os.path.isfile(os.path.join(folder, f"{split}.json")):
                return False
            if len(os.listdir(os.path.join(folder, split))) != expected:
                return False
    except (OSError, ValueError):
        return False
    return True


def _paths(folder: str) -> Dict[str, Tuple[str, str]]:
    return {split: (os.path.join(folder, f"{split}.json"), os.path.join(folder, split)) for split in _SPLITS}


def prepare_synthetic(cfg: SyntheticConfig, classes: Optional[Sequence[str]] = None) -> Dict[str, Tuple[str, str]]:
    """Generate the synthetic set for `cfg` (or reuse the cached one) and say where it is.

    Args:
        cfg: the data.synthetic section.
        classes: a subset of SYNTHETIC_CLASSES (label order); None = all three.

    Returns:
        {"train": (json_path, image_dir), "val": (json_path, image_dir)}.
    """
    params = synthetic_params(cfg, classes)
    folder = synthetic_cache_dir(cfg, classes)
    if _is_complete(folder, params):
        return _paths(folder)
    parent = os.path.dirname(folder)
    try:
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(folder)}-", dir=parent)
    except OSError as exc:
        raise DataError(f"cannot create the synthetic cache in '{parent}' (data.synthetic.cache_dir): {exc}") from None
    try:
        for split_index, split in enumerate(_SPLITS):
            _write_json(os.path.join(tmp, f"{split}.json"), _generate_split(tmp, split_index, params))
        _write_json(os.path.join(tmp, "params.json"), params)
        open(os.path.join(tmp, "COMPLETE"), "w").close()
        if _is_complete(folder, params):  # another process finished first: use its copy
            return _paths(folder)
        if os.path.exists(folder):  # stale or half-written: move it aside, then replace it
            stale = tempfile.mkdtemp(prefix=f".stale-{os.path.basename(folder)}-", dir=parent)
            os.replace(folder, os.path.join(stale, "old"))
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _is_complete(folder, params):  # not a concurrent writer's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _paths(folder)
