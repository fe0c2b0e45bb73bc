"""The data linter behind `detkit lint`: what a data set holds and every fix it needed.

:func:`lint_config` builds each split's data set with ``skip_bad_images`` and
``ignore_unknown_classes`` forced on (so one run reports every problem instead of stopping at
the first), optionally decodes every image (catching corruption that the cheap checks at load
time miss), and gathers: image count, boxes per class, ignore regions, empty images, every fix
of the data set's report (degenerate, clipped, duplicates, near-duplicates, unknown classes, bad
images, size / file name mismatches), and box size statistics in original pixels and after the
resize. :func:`plot_lint` draws class counts and box size distributions into a PNG;
:func:`lint_report` (what ``detkit lint`` runs) does all of it: lint, print, JSON, PNG.
"""

from __future__ import annotations

import copy
import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from detkit.atomic_io import write_json_atomic
from detkit.config import Config, DataConfig
from detkit.data.formats import build_dataset
from detkit.data.image_io import read_image
from detkit.data.resized_boxes import resized_annotations
from detkit.data.transforms import test_min_size
from detkit.errors import DataError

__all__ = ["lint_dataset", "lint_config", "plot_lint", "box_size_stats", "public_result", "format_lint", "lint_report"]

_PERCENTILES = (0, 5, 25, 50, 75, 95, 100)


def box_size_stats(boxes: np.ndarray) -> dict:
    """Percentiles of width, height, sqrt(area) and aspect ratio h / w, and COCO size buckets.

    Args:
        boxes: (N, 4) x1, y1, x2, y2.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = w * h
    out: dict = {"count": int(len(boxes))}
    if not len(boxes):
        return out
    for name, values in (("width", w), ("height", h), ("sqrt_area", np.sqrt(area)), ("aspect_h_over_w", h / w)):
        out[name] = {f"p{p}": round(float(np.percentile(values, p)), 3) for p in _PERCENTILES}
        out[name]["mean"] = round(float(values.mean()), 3)
    out["coco_buckets"] = {"small (<32^2)": int((area < 32 ** 2).sum()),
                           "medium": int(((area >= 32 ** 2) & (area < 96 ** 2)).sum()),
                           "large (>=96^2)": int((area >= 96 ** 2).sum())}
    return out


def _decode_all(dataset) -> Dict[str, list]:
    problems: Dict[str, list] = {"decode_errors": [], "decoded_size_mismatch": []}
    for i in tqdm(range(len(dataset)), desc="decoding images", disable=None, leave=False):
        path = dataset.image_path(i)
        try:
            image = read_image(path)
        except DataError as exc:
            problems["decode_errors"].append(str(exc))
            continue
        expected_h, expected_w = dataset.image_sizes[i]
        if image.shape[:2] != (expected_h, expected_w):
            problems["decoded_size_mismatch"].append(f"{path}: decodes to {image.shape[1]}x{image.shape[0]}, "
                                                     f"expected {expected_w}x{expected_h}")
    return problems


def lint_dataset(dataset, data_cfg: DataConfig, *, resize_sizes: Sequence[int], decode: bool = True) -> dict:
    """Statistics and problems of one data set (see the module docstring)."""
    annotations = [dataset.get_annotation(i) for i in range(len(dataset))]
    labels = np.concatenate([a["labels"] for a in annotations]) if annotations else np.zeros(0, np.int64)
    ignore = np.concatenate([a["ignore_labels"] for a in annotations]) if annotations else np.zeros(0, np.int64)
    per_image = np.array([len(a["boxes"]) for a in annotations])
    empty = [a["file_name"] for a in annotations if len(a["boxes"]) == 0]
    all_boxes = np.concatenate([a["boxes"] for a in annotations]) if annotations else np.zeros((0, 4))
    resized = resized_annotations(dataset, data_cfg, min_size=list(resize_sizes))
    resized_boxes = np.concatenate([e["boxes"] for e in resized]) if resized else np.zeros((0, 4))
    result = {
        "name": getattr(dataset, "name", ""),
        "images": len(dataset),
        "classes": list(dataset.classes),
        "boxes": int(len(labels)),
        "boxes_per_class": {c: int((labels == k + 1).sum()) for k, c in enumerate(dataset.classes)},
        "ignore_regions_per_class": {c: int((ignore == k + 1).sum()) for k, c in enumerate(dataset.classes)},
        "boxes_per_image": ({"min": int(per_image.min()), "mean": round(float(per_image.mean()), 3),
                             "max": int(per_image.max())} if len(per_image) else {}),
        "empty_images": {"count": len(empty), "examples": empty[:10]},
        "fixes": dataset.report.to_dict(),
        "bad_annotations": list(getattr(dataset, "bad_annotations", [])),  # every one, with its message
        "box_sizes": {"original": box_size_stats(all_boxes),
                      "resized": {"min_size": list(resize_sizes), "max_size": data_cfg.max_size,
                                  **box_size_stats(resized_boxes)}},
        "_sqrt_area": {"original": np.sqrt(np.prod(all_boxes[:, 2:] - all_boxes[:, :2], axis=1)).tolist(),
                       "resized": np.sqrt(np.prod(resized_boxes[:, 2:] - resized_boxes[:, :2], axis=1)).tolist()},
    }
    if decode:
        result["decode"] = _decode_all(dataset)
    return result


def lint_config(cfg: Config, splits: Sequence[str] = ("train", "val"), *, decode: bool = True) -> dict:
    """Lint the given splits of the config's data set; returns {"forced": ..., split: result}."""
    cfg = copy.deepcopy(cfg)
    cfg.data.skip_bad_images = True
    cfg.data.skip_bad_annotations = True
    cfg.data.ignore_unknown_classes = True
    out: dict = {"format": cfg.data.format,
                 "forced": {"data.skip_bad_images": True, "data.skip_bad_annotations": True,
                            "data.ignore_unknown_classes": True}}
    train_classes: Optional[List[str]] = None
    for split in splits:
        dataset = build_dataset(cfg, split, classes=train_classes, log_report=False)
        if split == "train":
            train_classes = dataset.classes
        sizes = cfg.data.min_size if split == "train" else [test_min_size(cfg.data)]
        out[split] = lint_dataset(dataset, cfg.data, resize_sizes=sizes, decode=decode)
    return out


def plot_lint(result: dict, path: str) -> None:
    """PNG: boxes per class per split, and the distribution of sqrt(box area) before / after the resize."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    splits = [k for k in ("train", "val") if k in result]
    fig, axes = plt.subplots(1, 1 + len(splits), figsize=(5 * (1 + len(splits)), 4), squeeze=False)
    ax = axes[0, 0]
    classes = result[splits[0]]["classes"] if splits else []
    width = 0.8 / max(1, len(splits))
    for j, split in enumerate(splits):
        counts = [result[split]["boxes_per_class"].get(c, 0) for c in classes]
        ax.bar(np.arange(len(classes)) + j * width, counts, width=width, label=split)
    ax.set_xticks(np.arange(len(classes)) + width * (len(splits) - 1) / 2)
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_ylabel("boxes")
    ax.set_title("boxes per class")
    ax.legend()
    for j, split in enumerate(splits):
        ax = axes[0, 1 + j]
        sq = result[split]["_sqrt_area"]
        values = [v for v in sq["original"] + sq["resized"] if v > 0]
        bins = np.geomspace(max(1.0, min(values)), max(values) * 1.01, 40) if values else 10
        ax.hist(sq["original"], bins=bins, alpha=0.6, label="original")
        ax.hist(sq["resized"], bins=bins, alpha=0.6, label="after resize")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("sqrt(box area) [px]")
        ax.set_title(f"{split}: box sizes")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def public_result(result: dict) -> dict:
    """The result without the raw per-box arrays kept for plotting (keys starting with '_')."""
    if isinstance(result, dict):
        return {k: public_result(v) for k, v in result.items() if not str(k).startswith("_")}
    return result


def format_lint(result: dict) -> str:
    """A human-readable summary of :func:`lint_config`'s result."""
    lines = [f"format: {result['format']}"]
    for split in ("train", "val"):
        if split not in result:
            continue
        r = result[split]
        lines.append(f"[{split}] {r['name']}: {r['images']} images, {r['boxes']} boxes, "
                     f"{r['empty_images']['count']} empty images")
        lines.append("  boxes per class: " + ", ".join(f"{c} {n}" for c, n in r["boxes_per_class"].items()))
        if any(r["ignore_regions_per_class"].values()):
            lines.append("  ignore regions: " + ", ".join(f"{c} {n}" for c, n in r["ignore_regions_per_class"].items()))
        if r["boxes_per_image"]:
            b = r["boxes_per_image"]
            lines.append(f"  boxes per image: min {b['min']}, mean {b['mean']}, max {b['max']}")
        if r["fixes"]:
            lines.append("  fixes:")
            for kind, entry in r["fixes"].items():
                detail = (" (" + ", ".join(f"{k}: {v}" for k, v in entry["details"].items()) + ")"
                          if entry["details"] else "")
                examples = ("; e.g. " + "; ".join(entry["examples"][:3])) if entry["examples"] else ""
                lines.append(f"    {entry['count']:6d} {entry['description']}{detail}{examples}")
        else:
            lines.append("  fixes: none needed")
        if r.get("bad_annotations"):
            lines.append(f"  {len(r['bad_annotations'])} bad annotation files:")
            lines.extend(f"    {message}" for message in r["bad_annotations"])
        for name, problems in r.get("decode", {}).items():
            if problems:
                lines.append(f"  {len(problems)} {name.replace('_', ' ')}; e.g. " + "; ".join(problems[:3]))
        for key in ("original", "resized"):
            st = r["box_sizes"][key]
            if st.get("count"):
                sq, ar = st["sqrt_area"], st["aspect_h_over_w"]
                where = "original px" if key == "original" else (
                    f"after resize (min_size {st['min_size']}, max_size {st['max_size']})")
                lines.append(f"  box sqrt(area), {where}: min {sq['p0']}, median {sq['p50']}, max {sq['p100']}; "
                             f"h/w median {ar['p50']}; COCO buckets {st['coco_buckets']}")
    return "\n".join(lines)


def lint_report(cfg: Config, splits: Sequence[str] = ("train", "val"), *, decode: bool = True,
                json_path: Optional[str] = None, png_path: Optional[str] = None,
                log: Callable[[str], None] = print) -> dict:
    """Lint ``splits`` of ``cfg`` (:func:`lint_config`), log the summary, write the JSON and the plot.

    Args:
        json_path: write :func:`public_result` of the result here (default: no JSON).
        png_path: the plot file (default: ``json_path`` with .png, else lint_data.png in the current folder).
    Returns:
        the full result of :func:`lint_config`.
    """
    result = lint_config(cfg, splits, decode=decode)
    log(format_lint(result))
    if json_path:
        write_json_atomic(public_result(result), json_path)
        log(f"wrote {json_path}")
    png = png_path or (os.path.splitext(json_path)[0] + ".png" if json_path else "lint_data.png")
    plot_lint(result, png)
    log(f"wrote {png}")
    return result
