"""The format table: which reader builds the data set of a split for ``data.format``.

    voc        VOCDataset (detkit/data/voc.py): official layout or any folder of VOC XML
    coco       COCODataset (detkit/data/coco.py): a COCO JSON and its image folder
    yolo       YOLODataset (detkit/data/yolo.py): label text files beside or under the images
    synthetic  the built-in shapes set (detkit/data/synthetic.py), read as COCO

With ``data.auto_split`` the data.train source is read whole and divided (detkit/data/auto_split.py).

Paths in the config: VOC roots and COCO files are taken relative to the current directory;
a COCO ``ann_file`` / ``img_dir`` is relative to the split's first root when roots are given.
Required keys (a COCO ``ann_file``, VOC ``roots``) are checked when the config is loaded
(detkit/config.py ``validate``), before anything is read.
"""

from __future__ import annotations

from typing import Optional, Sequence

from detkit.config import Config, DataConfig
from detkit.data.auto_split import auto_split_enabled, auto_split_side
from detkit.data.coco import COCODataset
from detkit.data.dataset import DetectionDataset, resolve_path
from detkit.data.synthetic import prepare_synthetic
from detkit.data.voc import VOCDataset, discover_voc_classes
from detkit.data.yolo import YOLODataset
from detkit.errors import ConfigError

__all__ = ["build_dataset", "check_split", "SPLITS"]

SPLITS = ("train", "val")


def check_split(split: str) -> None:
    """Raise ConfigError unless `split` is one of :data:`SPLITS`."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not valid; choose one of {SPLITS}")


def build_dataset(cfg: Config, split: str, *, classes: Optional[Sequence[str]] = None,
                  log_report: bool = True) -> DetectionDataset:
    """The raw data set (no transforms) of `split` ('train' or 'val') for cfg.data.format.

    Args:
        classes: class names to use (e.g. the training set's, for 'val'); default data.classes,
            else the data set's own (VOC 'val' discovers them on the training split).
    """
    check_split(split)
    d = cfg.data
    if auto_split_enabled(d):
        # The whole set is read for each side; its report is logged once, with the training side.
        whole = _read_split(d, "train", classes, log_report and split == "train")
        return auto_split_side(whole, d.auto_split, split)
    return _read_split(d, split, classes, log_report)


def _read_split(d: DataConfig, split: str, classes: Optional[Sequence[str]], log_report: bool) -> DetectionDataset:
    """data.<split> read by the reader of d.format (data.auto_split not applied)."""
    classes = list(classes) if classes is not None else d.classes
    s = getattr(d, split)
    if d.format == "synthetic":
        json_path, img_dir = prepare_synthetic(d.synthetic, classes)[split]
        return COCODataset(ann_file=json_path, img_dir=img_dir, classes=classes, drop_empty=d.drop_empty,
                           log_report=log_report, index_cache=d.index_cache, cache_dir=d.index_cache_dir)
    if d.format == "voc":
        if classes is None and split == "val":
            t = d.train
            classes = discover_voc_classes(roots=t.roots, splits=t.splits, ann_dir=t.ann_dir, split_file=t.split_file)
        return VOCDataset(roots=s.roots, splits=s.splits, ann_dir=s.ann_dir, img_dir=s.img_dir,
                          split_file=s.split_file, classes=classes, difficult=d.difficult,
                          skip_bad_images=d.skip_bad_images, ignore_unknown_classes=d.ignore_unknown_classes,
                          skip_bad_annotations=d.skip_bad_annotations, log_report=log_report)
    if d.format == "yolo":
        if classes is None and split == "val" and d.train.roots:  # the training root's names file
            classes = YOLODataset.find_names(resolve_path(d.train.roots[0]), d.names_file)
        return YOLODataset(roots=s.roots, splits=s.splits, split_file=s.split_file, classes=classes,
                           names_file=d.names_file, skip_bad_images=d.skip_bad_images,
                           ignore_unknown_classes=d.ignore_unknown_classes,
                           skip_bad_annotations=d.skip_bad_annotations, log_report=log_report)
    base = resolve_path(s.roots[0]) if s.roots else None
    return COCODataset(ann_file=resolve_path(s.ann_file, base), img_dir=resolve_path(s.img_dir, base),
                       classes=classes, skip_bad_images=d.skip_bad_images,
                       ignore_unknown_classes=d.ignore_unknown_classes, drop_empty=d.drop_empty,
                       skip_bad_annotations=d.skip_bad_annotations, log_report=log_report,
                       index_cache=d.index_cache, cache_dir=d.index_cache_dir)
