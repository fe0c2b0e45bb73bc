"""YOLO-format data sets: image files with one ``<class> <cx> <cy> <w> <h>`` text line per box.

Layouts (the first that exists, for a root and a split name S)
    ``<root>/images/S`` + ``<root>/labels/S``  (Ultralytics)
    ``<root>/S/images`` + ``<root>/S/labels``  (Roboflow and other hub exports; ``val`` also tries ``valid``)
    ``<root>/images`` + ``<root>/labels``      (no split)
    ``<root>`` alone: images and their ``.txt`` files side by side.
A ``split_file`` (relative to the root; one image path per line, relative to the root or absolute,
as Ultralytics' ``train.txt``) lists the images instead. The label file of ``.../images/a/b.jpg``
is ``.../labels/a/b.txt`` (the last ``images`` folder replaced by ``labels``), or ``b.txt`` beside
the image when that does not exist.

Lines and their flaws (nothing is fixed silently: each is counted in the data report)
    ``class cx cy w h``: centre and size as fractions of the image width and height; ``class`` is a
    0-based index into the class list (label = class + 1). ``class x1 y1 x2 y2 ... xn yn`` (an
    instance-segmentation polygon, YOLO-seg) becomes the polygon's bounding box. An image without a
    label file is a negative image (counted); blank lines are skipped; a line with another number
    of values or a non-number is dropped (counted, with file and line); a class index outside the
    list raises unless ``ignore_unknown_classes``; boxes reaching outside [0, 1] are clipped and
    degenerate ones dropped by the shared sanitation. A label file that cannot be read at all (not
    text) is a bad annotation: all are listed together, and skipped with ``skip_bad_annotations``.

Classes
    ``classes`` when given, else the ``names`` of a ``data.yaml``-style file (a list, or a mapping
    index -> name) or the lines of a ``classes.txt`` / ``obj.names`` file: ``names_file`` when given,
    else the first of those found in the root.
"""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
import yaml
from tqdm import tqdm

from detkit.data.dataset import DetectionDataset, probe_image, resolve_path, settle_bad_annotations
from detkit.data.image_io import IMAGE_EXTENSIONS
from detkit.data.index import ImageRecord
from detkit.data.report import DataReport
from detkit.data.sanitize import sanitize_boxes
from detkit.errors import DataError

__all__ = ["YOLODataset", "parse_yolo_labels", "read_yolo_names", "find_yolo_folders", "NAMES_FILES"]

NAMES_FILES = ("data.yaml", "dataset.yaml", "data.yml", "classes.txt", "obj.names", "classes.names")
_SPLIT_ALIASES = {"val": ("val", "valid", "validation"), "valid": ("valid", "val"), "test": ("test",)}


def read_yolo_names(path: str) -> List[str]:
    """Class names from a data.yaml-style file (``names`` list or index -> name mapping) or a text file
    with one name per line.

    Raises:
        DataError: unreadable file, no ``names``, or a mapping whose indices are not 0..K-1.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"class names file '{path}' cannot be read: {exc}") from None
    if not path.lower().endswith((".yaml", ".yml")):
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if not names:
            raise DataError(f"class names file '{path}' has no names (expected one class name per line)")
        return names
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"class names file '{path}' is not valid YAML: {exc}") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            index = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise DataError(f"class names file '{path}': 'names' keys must be class indices, got "
                            f"{list(names)[:5]}") from None
        if sorted(index) != list(range(len(index))):
            raise DataError(f"class names file '{path}': 'names' indices must be 0..{len(index) - 1}, "
                            f"got {sorted(index)}")
        return [index[i] for i in range(len(index))]
    if isinstance(names, list) and names:
        return [str(n) for n in names]
    raise DataError(f"class names file '{path}' has no 'names' list or mapping (as in Ultralytics' data.yaml: "
                    f"names: [cat, dog] or names: {{0: cat, 1: dog}})")


def find_yolo_folders(root: str, split: Optional[str]) -> Tuple[str, Optional[str]]:
    """(image folder, label folder or None for side-by-side) of ``split`` under ``root``; see the module
    docstring for the order tried.

    Raises:
        DataError: the root does not exist, or no layout matches (the message lists what was tried).
    """
    if not os.path.isdir(root):
        raise DataError(f"YOLO root '{root}' does not exist (relative roots are taken from the current "
                        f"directory '{os.getcwd()}')")
    tried = []
    names = _SPLIT_ALIASES.get(split, (split,)) if split else ()
    for name in names:
        for images, labels in ((os.path.join(root, "images", name), os.path.join(root, "labels", name)),
                               (os.path.join(root, name, "images"), os.path.join(root, name, "labels"))):
            tried.append(images)
            if os.path.isdir(images):
                return images, labels
    if split:
        tried.append(os.path.join(root, split))
        if os.path.isdir(os.path.join(root, split)):  # a split folder with images and labels side by side
            return os.path.join(root, split), None
        raise DataError(f"YOLO split '{split}' not found under '{root}': tried {', '.join(tried)} "
                        f"(or give data.*.split_file, or no split to use the whole root)")
    if os.path.isdir(os.path.join(root, "images")):
        return os.path.join(root, "images"), os.path.join(root, "labels")
    return root, None


def _label_path(image_path: str, images_dir: str, labels_dir: Optional[str]) -> str:
    stem = os.path.splitext(image_path)[0]
    if labels_dir is not None:
        candidate = os.path.join(labels_dir, os.path.relpath(stem, images_dir) + ".txt")
        if os.path.isfile(candidate):
            return candidate
    parts = stem.split(os.sep)
    if "images" in parts[:-1]:  # Ultralytics' rule: the last 'images' folder becomes 'labels'
        k = len(parts) - 2 - parts[-2::-1].index("images")
        candidate = os.sep.join(parts[:k] + ["labels"] + parts[k + 1:]) + ".txt"
        if os.path.isfile(candidate):
            return candidate
    return stem + ".txt"


def parse_yolo_labels(path: str) -> Tuple[List[Tuple[int, List[float], int]], List[str]]:
    """Read one label file: ([(class index, [cx, cy, w, h] in [0, 1], line number)], [problem per bad line]).

    Raises:
        DataError: the file cannot be read as text.
    """
    try:
        with open(path, "r", encoding="utf-8-sig") as f:  # -sig: a byte-order mark some Windows tools write
            lines = f.read().splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"label file '{path}' is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise DataError(f"label file '{path}' cannot be read: {exc}") from None
    objects, problems = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        where = f"{os.path.basename(path)}:{number}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            problems.append(f"{where}: {line.strip()!r} is not numbers")
            continue
        cls = values[0]
        if cls != int(cls) or cls < 0:
            problems.append(f"{where}: class {fields[0]!r} is not a class index (0, 1, 2, ...)")
            continue
        coords = values[1:]
        if len(coords) == 4:
            box = coords
        elif len(coords) >= 6 and len(coords) % 2 == 0:  # a segmentation polygon -> its bounding box
            xs, ys = coords[0::2], coords[1::2]
            box = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
        else:
            problems.append(f"{where}: {len(fields)} values, expected 'class cx cy w h' (5) or a polygon "
                            f"'class x1 y1 ... xn yn' (n >= 3)")
            continue
        objects.append((int(cls), box, number))
    return objects, problems


def _list_images(folder: str) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        # Hidden files are not images, whatever their extension (macOS writes "._name.jpg" metadata files).
        out += [os.path.join(dirpath, f) for f in sorted(filenames)
                if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
    return out


def _read_image_list(list_path: str, root: str) -> List[str]:
    try:
        with open(list_path, "r", encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        raise DataError(f"split file '{list_path}' does not exist or cannot be read") from None
    return [resolve_path(line, root) for line in lines]


class YOLODataset(DetectionDataset):
    """A YOLO-format data set; see the module docstring for layouts, lines and flaws.

    Args:
        roots: one or more root folders (concatenated in order).
        splits: split name per root (or one for all); empty: the whole root.
        split_file: a list of image paths (relative to each root) instead of a split name.
        classes: class names (index i -> ``classes[i]``); None: from ``names_file`` or a names file in the root.
        names_file: data.yaml / classes.txt path (relative to the first root, or absolute).
        skip_bad_images, ignore_unknown_classes, skip_bad_annotations, log_report: as VOCDataset.
    """

    def __init__(self, *, roots: Sequence[str], splits: Sequence[str] = (), split_file: Optional[str] = None,
                 classes: Optional[Sequence[str]] = None, names_file: Optional[str] = None,
                 skip_bad_images: bool = False, ignore_unknown_classes: bool = False,
                 skip_bad_annotations: bool = False, log_report: bool = True) -> None:
        roots = [resolve_path(str(r)) for r in roots]
        if not roots:
            raise DataError("a YOLO data set needs at least one root folder (data.*.roots)")
        if splits and len(splits) not in (1, len(roots)):
            raise DataError(f"splits {list(splits)} must have one entry or one per root ({len(roots)})")
        split_desc = split_file or "+".join(splits) or "all"
        name = f"yolo {'+'.join(os.path.basename(os.path.normpath(r)) for r in roots)}:{split_desc}"
        report = DataReport(name)
        classes = list(classes) if classes is not None else self.find_names(roots[0], names_file)
        entries: List[Tuple[str, str, str]] = []  # (image path, label path, image folder for file names)
        for k, root in enumerate(roots):
            if split_file is not None:
                images, folder, labels = _read_image_list(resolve_path(split_file, root), root), root, None
            else:
                split = (splits[k] if len(splits) == len(roots) else splits[0]) if splits else None
                folder, labels = find_yolo_folders(root, split)
                images = _list_images(folder)
            entries += [(img, _label_path(img, folder, labels), folder) for img in images]
        if not entries:
            raise DataError(f"{name}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
        self.bad_annotations: List[str] = []
        parsed = []
        for image_path, label_path, folder in tqdm(entries, desc=f"reading {name}", disable=None, leave=False):
            if not os.path.isfile(label_path):
                report.add("yolo_negative_no_label", example=os.path.relpath(image_path, folder))
                parsed.append((image_path, label_path, folder, []))
                continue
            try:
                objects, problems = parse_yolo_labels(label_path)
            except DataError as exc:
                self.bad_annotations.append(str(exc))
                continue
            for problem in problems:
                report.add("malformed_line_dropped", example=problem)
            parsed.append((image_path, label_path, folder, objects))
        settle_bad_annotations(self.bad_annotations, len(entries), name, skip=skip_bad_annotations, report=report,
                               what="label files")
        records = []
        for image_path, label_path, folder, objects in parsed:
            record = self._make_record(image_path, label_path, folder, objects, classes, report, len(records) + 1,
                                       skip_bad_images, ignore_unknown_classes)
            if record is not None:
                records.append(record)
        super().__init__(records=records, classes=classes, report=report, name=name)
        if log_report:
            report.log()

    @staticmethod
    def find_names(root: str, names_file: Optional[str]) -> List[str]:
        """The class names: ``names_file`` (relative to ``root``), else the first names file in ``root``."""
        if names_file is not None:
            return read_yolo_names(resolve_path(names_file, root))
        for candidate in NAMES_FILES:
            path = os.path.join(root, candidate)
            if os.path.isfile(path):
                return read_yolo_names(path)
        raise DataError(f"YOLO data set '{root}': no class names; give data.classes, or data.names_file (a "
                        f"data.yaml with 'names', or a text file with one name per line), or put one of "
                        f"{', '.join(NAMES_FILES)} in the root")

    @staticmethod
    def _make_record(image_path: str, label_path: str, folder: str, objects: list, classes: List[str],
                     report: DataReport, index: int, skip_bad_images: bool,
                     ignore_unknown: bool) -> Optional[ImageRecord]:
        probed = probe_image(image_path, skip_bad_images=skip_bad_images, report=report)
        if probed is None:
            return None
        h, w, _ = probed
        boxes, labels = [], []
        where = os.path.basename(label_path)
        for cls, (cx, cy, bw, bh), number in objects:
            if cls >= len(classes):
                if not ignore_unknown:
                    raise DataError(f"label file '{label_path}' line {number}: class index {cls} but the class list "
                                    f"has {len(classes)} names (0..{len(classes) - 1}: {classes}); fix the names "
                                    f"file or data.classes, or set data.ignore_unknown_classes=true to drop such boxes")
                report.add("unknown_class_dropped", example=f"{where}:{number}", detail=f"index {cls}")
                continue
            boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
            labels.append(cls + 1)
        boxes, labels = sanitize_boxes(np.array(boxes), np.array(labels), (h, w), report, where)
        empty = np.zeros((0, 4), np.float32)
        return ImageRecord(image_id=index, path=image_path, file_name=os.path.relpath(image_path, folder),
                           size=(h, w), boxes=boxes, labels=labels, ignore_boxes=empty,
                           ignore_labels=np.zeros((0,), np.int64))
