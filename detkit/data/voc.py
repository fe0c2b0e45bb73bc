"""Pascal VOC data sets: the official layout (VOC2007 / VOC2012 trees) and any folder of VOC XML files.

Layouts
    Official: ``<root>/Annotations/<id>.xml``, ``<root>/JPEGImages/<id>.jpg``,
    ``<root>/ImageSets/Main/<split>.txt``. Several roots (e.g. VOC2007 + VOC2012 trainval) are
    concatenated in order. Any folder: ``ann_dir`` / ``img_dir`` relative to the root, and either a
    ``split_file`` of ids (relative to the root) or no split at all (every ``*.xml`` in ``ann_dir``).
    The image of an annotation is the XML's ``<filename>`` when that file exists in ``img_dir``,
    else ``<id>`` with any common image extension (case-insensitive); a mismatch is reported.

Pixel convention (applied in :func:`voc_box_to_xyxy` and nowhere else)
    VOC boxes are 1-based inclusive pixel indices: a box covering the pixel columns 1..W of a W-wide
    image has xmin = 1, xmax = W. detkit uses continuous coordinates in which pixel column j
    (0-based) spans [j, j + 1]. So ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax``
    (Detectron2 does the same), and a full-image VOC box becomes [0, 0, W, H]. A box with
    xmax <= xmin or ymax <= ymin *in the file* is degenerate (a click without a drag in the
    annotation tool) and is dropped, although the inclusive convention would make it one pixel wide.
    :func:`xyxy_to_voc_box` is the exact inverse (used by tools that write VOC).

Classes
    From ``classes`` when given, else discovered: the sorted set of object names in this data
    set's files (build_dataset discovers them on the training split and passes them to the
    validation split). Label i is ``classes[i - 1]``; category ids are 1..K.

``difficult`` policy
    ``ignore`` (default): difficult objects become ignore regions (``ignore_boxes``) that the
    assigner ignores and the evaluator excludes, as the VOC metric does; ``train``: ordinary
    boxes; ``drop``: removed.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from detkit.data.dataset import DetectionDataset, probe_image, resolve_path, settle_bad_annotations
from detkit.data.image_io import IMAGE_EXTENSIONS
from detkit.data.index import ImageRecord
from detkit.data.report import DataReport
from detkit.data.sanitize import sanitize_boxes
from detkit.errors import DataError

__all__ = [
    "VOCDataset", "VOCObject", "VOCAnnotation", "parse_voc_xml", "list_voc_entries",
    "discover_voc_classes", "voc_box_to_xyxy", "xyxy_to_voc_box", "DIFFICULT_POLICIES",
]

DIFFICULT_POLICIES = ("ignore", "train", "drop")


def voc_box_to_xyxy(xmin: float, ymin: float, xmax: float, ymax: float) -> List[float]:
    """VOC 1-based inclusive pixel box -> detkit continuous (x1, y1, x2, y2): [xmin-1, ymin-1, xmax, ymax]."""
    return [xmin - 1.0, ymin - 1.0, xmax, ymax]


def xyxy_to_voc_box(x1: float, y1: float, x2: float, y2: float) -> List[float]:
    """Inverse of :func:`voc_box_to_xyxy`: [x1+1, y1+1, x2, y2]."""
    return [x1 + 1.0, y1 + 1.0, x2, y2]


@dataclass
class VOCObject:
    name: str
    difficult: bool
    box: List[float]  # raw VOC (xmin, ymin, xmax, ymax), 1-based inclusive


@dataclass
class VOCAnnotation:
    path: str
    filename: Optional[str]
    size: Optional[Tuple[int, int]]  # (w, h) as written in <size>, None when absent or zero
    objects: List[VOCObject] = field(default_factory=list)


def _coordinate(bndbox: ET.Element, key: str, path: str, index: int) -> float:
    text = bndbox.findtext(key)
    try:
        return float(text)
    except (TypeError, ValueError):
        raise DataError(f"annotation '{path}': object {index} has <{key}> = {text!r}, "
                        f"expected a number") from None


def parse_voc_xml(path: str) -> VOCAnnotation:
    """Read one VOC XML file (raw values; no conversion, no sanitation).

    Raises:
        DataError: the file is missing, not well-formed XML (the parser's message is included),
            or an object lacks <name> / <bndbox> / a numeric coordinate.
    """
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(f"annotation file '{path}' does not exist") from None
    except ET.ParseError as exc:
        raise DataError(f"annotation file '{path}' is not valid XML: {exc}") from None
    filename = (root.findtext("filename") or "").strip() or None
    size = None
    size_el = root.find("size")
    if size_el is not None:
        try:
            w, h = int(float(size_el.findtext("width"))), int(float(size_el.findtext("height")))
            size = (w, h) if w > 0 and h > 0 else None
        except (TypeError, ValueError):
            size = None
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataError(f"annotation '{path}': object {i} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataError(f"annotation '{path}': object {i} ('{name}') has no <bndbox>")
        box = [_coordinate(bndbox, k, path, i) for k in ("xmin", "ymin", "xmax", "ymax")]
        difficult = (obj.findtext("difficult") or "0").strip() not in ("", "0")
        objects.append(VOCObject(name=name, difficult=difficult, box=box))
    return VOCAnnotation(path=path, filename=filename, size=size, objects=objects)


def _read_split_ids(split_path: str) -> List[str]:
    try:
        with open(split_path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"split file '{split_path}' does not exist") from None
    # Class-specific lists ("<id> 1") keep only the id; blank lines are skipped.
    return [line.split()[0] for line in lines if line.strip()]


def list_voc_entries(*, roots: Sequence[str], splits: Sequence[str] = (), ann_dir: str = "Annotations",
                     split_file: Optional[str] = None) -> List[Tuple[str, str, str]]:
    """The (root, image id, annotation path) of every image of the given roots and splits, in order.

    Raises:
        DataError: a root, annotation folder or split file does not exist.
    """
    if not roots:
        raise DataError("a VOC data set needs at least one root folder")
    if splits and len(splits) not in (1, len(roots)):
        raise DataError(f"splits {list(splits)} must have one entry or one per root ({len(roots)})")
    entries = []
    for k, root in enumerate(roots):
        root = resolve_path(root)
        ann_root = resolve_path(ann_dir, root)
        if not os.path.isdir(root):
            raise DataError(f"VOC root '{root}' does not exist (relative roots are taken from the "
                            f"current directory '{os.getcwd()}')")
        if not os.path.isdir(ann_root):
            raise DataError(f"annotation folder '{ann_root}' does not exist (data.*.ann_dir = '{ann_dir}')")
        if split_file is not None:
            ids = _read_split_ids(resolve_path(split_file, root))
        elif splits:
            split = splits[k] if len(splits) == len(roots) else splits[0]
            ids = _read_split_ids(os.path.join(root, "ImageSets", "Main", f"{split}.txt"))
        else:
            ids = sorted(os.path.splitext(f)[0] for f in os.listdir(ann_root) if f.lower().endswith(".xml"))
        entries.extend((root, i, os.path.join(ann_root, i + ".xml")) for i in ids)
    return entries


def discover_voc_classes(*, roots: Sequence[str], splits: Sequence[str] = (), ann_dir: str = "Annotations",
                         split_file: Optional[str] = None) -> List[str]:
    """The sorted set of object names in the annotation files of the given roots / splits."""
    names = set()
    for _, _, ann_path in list_voc_entries(roots=roots, splits=splits, ann_dir=ann_dir, split_file=split_file):
        if os.path.isfile(ann_path):
            try:
                names.update(o.name for o in parse_voc_xml(ann_path).objects)
            except DataError:  # reported, all together, when the data set itself is read
                continue
    return sorted(names)


class _ImageFinder:
    """Finds an annotation's image in a folder, listing each folder once (case-insensitive)."""

    def __init__(self) -> None:
        self._listings: Dict[str, Dict[str, str]] = {}

    def _listing(self, folder: str) -> Dict[str, str]:
        if folder not in self._listings:
            names = os.listdir(folder) if os.path.isdir(folder) else []
            listing = {n.lower(): n for n in sorted(names, reverse=True)}
            listing.update({n: n for n in names})
            self._listings[folder] = listing
        return self._listings[folder]

    def find(self, img_dir: str, image_id: str, xml_filename: Optional[str]) -> Optional[str]:
        folder = os.path.dirname(os.path.join(img_dir, image_id))
        listing = self._listing(folder)
        stem = os.path.basename(image_id)
        candidates = []
        if xml_filename:
            candidates.append(os.path.basename(xml_filename))
        candidates += [stem + ext for ext in IMAGE_EXTENSIONS]
        if xml_filename and not os.path.splitext(xml_filename)[1]:
            candidates += [os.path.basename(xml_filename) + ext for ext in IMAGE_EXTENSIONS]
        for name in candidates:
            found = listing.get(name) or listing.get(name.lower())
            if found is not None:
                return os.path.join(folder, found)
        return None


class VOCDataset(DetectionDataset):
    """Pascal VOC data set (official layout or any folder of VOC XML files); see the module docstring.

    Args:
        roots: one or more root folders (concatenated in order).
        splits: split names per root (or one for all), read from ImageSets/Main/<split>.txt;
            empty with no split_file: every XML file of ann_dir.
        ann_dir, img_dir: folders relative to each root.
        split_file: a file of ids relative to each root (instead of splits).
        classes: class names; None = discovered (sorted) from these files.
        difficult: 'ignore' | 'train' | 'drop'.
        skip_bad_images: skip (and count) missing / truncated / unreadable images instead of raising.
        ignore_unknown_classes: drop (and count) objects whose name is not in classes instead of raising.
        log_report: log the report summary once after reading.

    Raises:
        DataError: missing folders / files, unparsable XML, unknown classes, bad images (per the flags).
    """

    def __init__(self, *, roots: Sequence[str], splits: Sequence[str] = (), ann_dir: str = "Annotations",
                 img_dir: str = "JPEGImages", split_file: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None, difficult: str = "ignore",
                 skip_bad_images: bool = False, ignore_unknown_classes: bool = False,
                 skip_bad_annotations: bool = False, log_report: bool = True) -> None:
        if difficult not in DIFFICULT_POLICIES:
            raise DataError(f"difficult policy {difficult!r} is not valid; choose one of {DIFFICULT_POLICIES}")
        roots = [str(r) for r in roots]
        split_desc = split_file or "+".join(splits) or "all"
        name = f"voc {'+'.join(os.path.basename(os.path.normpath(r)) for r in roots)}:{split_desc}"
        report = DataReport(name)
        entries = list_voc_entries(roots=roots, splits=splits, ann_dir=ann_dir, split_file=split_file)
        parsed = []
        # Every unreadable or invalid annotation file, each with the parser's message: a user fixes
        # them all after one run instead of meeting them one at a time.
        self.bad_annotations: List[str] = []
        for root, image_id, ann_path in tqdm(entries, desc=f"reading {name}", disable=None, leave=False):
            if not os.path.isfile(ann_path):
                if not skip_bad_images:
                    raise DataError(f"annotation file '{ann_path}' listed in the split does not exist "
                                    f"(set data.skip_bad_images=true to skip such entries)")
                report.add("missing_annotation_skipped", example=ann_path)
                continue
            try:
                parsed.append((root, image_id, parse_voc_xml(ann_path)))
            except DataError as exc:
                self.bad_annotations.append(str(exc))
        settle_bad_annotations(self.bad_annotations, len(entries), name, skip=skip_bad_annotations, report=report)
        if classes is None:
            classes = sorted({o.name for _, _, ann in parsed for o in ann.objects})
        self.difficult = difficult
        self._skip_bad_images = skip_bad_images
        self._ignore_unknown = ignore_unknown_classes
        self._label_of = {c: i + 1 for i, c in enumerate(classes)}
        finder = _ImageFinder()
        records = []
        for root, image_id, ann in parsed:
            record = self._make_record(root, image_id, ann, img_dir, finder, report, len(records) + 1)
            if record is not None:
                records.append(record)
        super().__init__(records=records, classes=classes, report=report, name=name)
        if log_report:
            report.log()

    def _locate_image(self, root: str, image_id: str, ann: VOCAnnotation, img_dir: str,
                      finder: _ImageFinder, report: DataReport) -> Optional[Tuple[str, Tuple[int, int]]]:
        """(image path, (h, w)) or None when the image is bad and skip_bad_images is set."""
        folder = resolve_path(img_dir, root)
        path = finder.find(folder, image_id, ann.filename)
        if path is None:
            missing = (f"image of annotation '{ann.path}' not found: no '{ann.filename or image_id}' "
                       f"and no '{image_id}' with an image extension in '{folder}'")
            if not self._skip_bad_images:
                raise DataError(f"{missing} (set data.skip_bad_images=true to skip bad images)")
            report.add("bad_image_skipped", example=missing)
            return None
        probed = probe_image(path, skip_bad_images=self._skip_bad_images, report=report)
        if probed is None:
            return None
        h, w, orientation = probed
        if ann.filename and os.path.basename(path) != os.path.basename(ann.filename):
            report.add("filename_mismatch", example=f"{ann.path}: <filename> {ann.filename!r}, "
                                                    f"used {os.path.basename(path)!r}")
        if ann.size is not None and ann.size != (w, h):
            detail = ("annotated on the unrotated image" if orientation in (5, 6, 7, 8) and ann.size == (h, w)
                      else "different size")
            report.add("size_mismatch", example=f"{ann.path}: <size> {ann.size[0]}x{ann.size[1]}, "
                                                f"image {w}x{h}", detail=detail)
        return path, (h, w)

    def _make_record(self, root: str, image_id: str, ann: VOCAnnotation, img_dir: str,
                     finder: _ImageFinder, report: DataReport, index: int) -> Optional[ImageRecord]:
        located = self._locate_image(root, image_id, ann, img_dir, finder, report)
        if located is None:
            return None
        path, size = located
        boxes, labels, ignore_boxes, ignore_labels = [], [], [], []
        for obj in ann.objects:
            label = self._label_of.get(obj.name)
            if label is None:
                if not self._ignore_unknown:
                    raise DataError(f"annotation '{ann.path}': class '{obj.name}' is not in the class list "
                                    f"{sorted(self._label_of)} (add it to data.classes, or set "
                                    f"data.ignore_unknown_classes=true to drop such objects)")
                report.add("unknown_class_dropped", example=ann.path, detail=obj.name)
                continue
            if not (obj.box[2] > obj.box[0] and obj.box[3] > obj.box[1]):
                # xmax == xmin in the file is a click without a drag (LabelImg writes such boxes),
                # not a one-pixel object: a degenerate box, whatever the 1-based convention says.
                report.add("degenerate_dropped", example=f"{os.path.basename(ann.path)}: {obj.box} in the file",
                           detail="zero or negative size in the file")
                continue
            box = voc_box_to_xyxy(*obj.box)
            if obj.difficult and self.difficult == "drop":
                report.add("difficult_dropped", example=ann.path)
            elif obj.difficult and self.difficult == "ignore":
                report.add("difficult_ignored", example=ann.path)
                ignore_boxes.append(box)
                ignore_labels.append(label)
            else:
                boxes.append(box)
                labels.append(label)
        where = os.path.basename(ann.path)
        boxes, labels = sanitize_boxes(np.array(boxes), np.array(labels), size, report, where)
        ignore_boxes, ignore_labels = sanitize_boxes(np.array(ignore_boxes), np.array(ignore_labels),
                                                     size, report, where + " (difficult)")
        file_name = os.path.relpath(path, resolve_path(img_dir, root))
        return ImageRecord(image_id=index, path=path, file_name=file_name, size=size, boxes=boxes,
                           labels=labels, ignore_boxes=ignore_boxes, ignore_labels=ignore_labels)
