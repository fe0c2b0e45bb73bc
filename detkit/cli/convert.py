"""Convert a Pascal VOC or YOLO split (or any data set a detkit config reads) to a COCO JSON file.

Usage:
    detkit convert --root ../shared/data/BCCD --split train --out bccd_train.json
    detkit convert --root /data/VOC2007 --root /data/VOC2012 --split trainval --out 0712.json \\
                   --img-root /data
    detkit convert --root my_folder --ann-dir xml --img-dir images --out all.json  # every XML
    detkit convert --config configs/bccd_r18_fpn.yaml --config-split val --out val.json
    detkit convert --format yolo --root my_yolo --split val --out val.json  # names from data.yaml

Boxes: VOC's 1-based inclusive [xmin, ymin, xmax, ymax] becomes COCO [xmin-1, ymin-1, w, h] with
w = xmax - xmin + 1; degenerate boxes are dropped and out-of-image boxes clipped, as the VOC data
set does (the fixes are printed); difficult objects follow --difficult (ignore -> iscrowd 1).
Reading the output with data.format=coco gives exactly the boxes and labels of the VOC data set.
YOLO (--format yolo, detkit/data/yolo.py): --root and --split find images/<split> + labels/<split>
(or <split>/images, or files side by side); --names FILE or a data.yaml / classes.txt in the root
gives the class names; centre-size fractions become COCO pixel boxes.
With --config, key=value overrides change the config (e.g. data.val.splits=[test]).
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from detkit.cli.command import report_error, run_standalone
from detkit.errors import ConfigError, DetkitError

__all__ = ["add_arguments", "run", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``detkit convert`` (those of tools/voc2coco.py)."""
    parser.add_argument("--format", choices=("voc", "yolo"), default="voc", help="the layout under --root")
    parser.add_argument("--root", action="append", default=[], help="data set root (repeat to concatenate)")
    parser.add_argument("--names", help="YOLO: class names file (data.yaml or one name per line)")
    parser.add_argument("--split", action="append", default=[],
                        help="ImageSets/Main/<split>.txt (one, or one per root); none = every XML file")
    parser.add_argument("--ann-dir", default="Annotations")
    parser.add_argument("--img-dir", default="JPEGImages")
    parser.add_argument("--split-file", help="file of ids relative to each root (instead of --split)")
    parser.add_argument("--classes", help="comma-separated class names (default: discovered, sorted)")
    parser.add_argument("--difficult", choices=("ignore", "train", "drop"), default="ignore")
    parser.add_argument("--skip-bad-images", action="store_true")
    parser.add_argument("--ignore-unknown-classes", action="store_true")
    parser.add_argument("--config", help="take the VOC settings of a detkit config instead of --root ...")
    parser.add_argument("--config-split", choices=("train", "val"), default="train")
    parser.add_argument("--img-root", help="write file names relative to this folder (default: the image folder)")
    parser.add_argument("--out", required=True, help="output COCO JSON file")
    parser.add_argument("overrides", nargs="*", help="config overrides (with --config), dotted.key=value")


def _source(args: argparse.Namespace):
    """The data set the flags name: a config's split, or a YOLO or VOC folder read with the given settings."""
    from detkit.config import load_config
    from detkit.data.formats import build_dataset
    from detkit.data.voc import VOCDataset
    from detkit.data.yolo import YOLODataset

    if args.config:
        return build_dataset(load_config(args.config, args.overrides), args.config_split, log_report=False)
    if not args.root:
        raise ConfigError("give --root (one or more data set folders) or --config (a detkit config)")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    if args.format == "yolo":
        return YOLODataset(roots=args.root, splits=args.split, split_file=args.split_file, classes=classes,
                           names_file=args.names, skip_bad_images=args.skip_bad_images,
                           ignore_unknown_classes=args.ignore_unknown_classes, log_report=False)
    return VOCDataset(roots=args.root, splits=args.split, ann_dir=args.ann_dir, img_dir=args.img_dir,
                      split_file=args.split_file, classes=classes, difficult=args.difficult,
                      skip_bad_images=args.skip_bad_images, ignore_unknown_classes=args.ignore_unknown_classes,
                      log_report=False)


def run(args: argparse.Namespace) -> int:
    """Convert as ``args`` say; 0 when the file is written, 2 on a user error."""
    from detkit.data.coco_export import write_coco_file

    try:
        write_coco_file(_source(args), args.out, img_root=args.img_root)
    except DetkitError as exc:
        return report_error(exc, 2)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``detkit convert`` as a program of its own (tools/voc2coco.py)."""
    return run_standalone(__doc__, add_arguments, run, argv)
