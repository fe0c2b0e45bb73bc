"""DataReport: counts every fix a data set applies to its annotations, reported once per data set.

Loading never fixes data silently: each kind of fix (a degenerate box dropped, a box clipped to
its image, an unknown class dropped, a bad image skipped, ...) is counted here with a few example
files, and the data set logs :meth:`DataReport.summary` once after it has read everything.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Dict, List, Optional

__all__ = ["DataReport", "FIX_DESCRIPTIONS"]

logger = logging.getLogger("detkit.data")

# Every kind a report can count, with the sentence the summary prints for it.
FIX_DESCRIPTIONS: Dict[str, str] = {
    "degenerate_dropped": "zero- or negative-area boxes dropped",
    # 1 px: detkit.data.sanitize.CLIP_TOLERANCE_PX (the reason for it is there)
    "clipped": "boxes reaching 1 px or more outside their image clipped to it (sub-pixel overshoot is clipped "
               "uncounted)",
    "duplicate_dropped": "exact duplicate boxes (same class, same coordinates) dropped",
    "near_duplicate": "near-duplicate boxes (same class, IoU >= 0.9) found and kept",
    "unknown_class_dropped": "objects of a class outside the class list dropped",
    "difficult_ignored": "difficult objects turned into ignore regions",
    "difficult_dropped": "difficult objects dropped",
    "crowd_ignored": "crowd annotations turned into ignore regions",
    "bad_image_skipped": "images missing, truncated or unreadable, skipped",
    "missing_annotation_skipped": "split entries without an annotation file, skipped",
    "bad_annotation_skipped": "annotation files unreadable or invalid (data.skip_bad_annotations), skipped",
    "empty_dropped": "images without annotations dropped (data.drop_empty)",
    "yolo_negative_no_label": "images without a label file, kept as negative images (YOLO)",
    "malformed_line_dropped": "label lines that are not 'class cx cy w h' or a polygon, dropped (YOLO)",
    "size_mismatch": "images whose annotated size differs from the real image size (the real size is used)",
    "filename_mismatch": "annotations whose <filename> is not the image file found for them",
    "exif_rotated": "images with an EXIF orientation (2-8), applied on load (boxes are taken in the rotated frame)",
    "exif_invalid_ignored": "images with an invalid EXIF orientation tag (outside 1-8), ignored: the image is used "
                            "as stored",
}


class DataReport:
    """Counts of the fixes applied while reading one data set.

    Attributes:
        name: what the report is about (shown in the summary), e.g. ``"voc BCCD:train"``.
        counts: kind -> number of boxes / images / objects concerned.
        examples: kind -> up to ``max_examples`` short descriptions (file name and detail).
        details: kind -> Counter of sub-keys (e.g. unknown class name -> count).
    """

    def __init__(self, name: str = "", *, max_examples: int = 5) -> None:
        self.name = name
        self.max_examples = max_examples
        self.counts: Counter = Counter()
        self.examples: Dict[str, List[str]] = {}
        self.details: Dict[str, Counter] = {}

    def add(self, kind: str, n: int = 1, *, example: Optional[str] = None, detail: Optional[str] = None) -> None:
        """Count `n` occurrences of the fix `kind` (a key of FIX_DESCRIPTIONS)."""
        if kind not in FIX_DESCRIPTIONS:
            raise KeyError(f"unknown report kind {kind!r}; known: {sorted(FIX_DESCRIPTIONS)}")
        if n <= 0:
            return
        self.counts[kind] += n
        if example is not None:
            bucket = self.examples.setdefault(kind, [])
            if len(bucket) < self.max_examples:
                bucket.append(example)
        if detail is not None:
            self.details.setdefault(kind, Counter())[detail] += n

    def add_counted(self, kind: str, n: int, *, examples=(), details: Optional[Dict[str, int]] = None) -> None:
        """Count `n` occurrences of `kind` at once: the same as `n` calls of :meth:`add` whose first
        examples are `examples` (in order) and whose details sum to `details`."""
        if kind not in FIX_DESCRIPTIONS:
            raise KeyError(f"unknown report kind {kind!r}; known: {sorted(FIX_DESCRIPTIONS)}")
        if n <= 0:
            return
        self.counts[kind] += n
        if len(examples):
            bucket = self.examples.setdefault(kind, [])
            bucket.extend(list(examples)[: max(0, self.max_examples - len(bucket))])
        for detail, k in (details or {}).items():
            self.details.setdefault(kind, Counter())[detail] += k

    def __getitem__(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def __bool__(self) -> bool:
        return any(self.counts.values())

    def merge(self, other: "DataReport") -> None:
        """Add the counts, examples and details of `other` to this report."""
        for kind, n in other.counts.items():
            self.counts[kind] += n
        for kind, examples in other.examples.items():
            bucket = self.examples.setdefault(kind, [])
            bucket.extend(examples[: max(0, self.max_examples - len(bucket))])
        for kind, detail in other.details.items():
            self.details.setdefault(kind, Counter()).update(detail)

    def to_dict(self) -> dict:
        """Plain dict (JSON-ready): ``{kind: {"count", "description", "examples", "details"}}``."""
        out = {}
        for kind in FIX_DESCRIPTIONS:
            if self.counts.get(kind, 0):
                out[kind] = {
                    "count": int(self.counts[kind]),
                    "description": FIX_DESCRIPTIONS[kind],
                    "examples": list(self.examples.get(kind, [])),
                    "details": dict(self.details.get(kind, {})),
                }
        return out

    def summary(self) -> str:
        """One line per kind of fix, or a line saying that nothing needed fixing."""
        title = f"data report{' for ' + self.name if self.name else ''}"
        if not self:
            return f"{title}: no fixes needed"
        lines = [f"{title}:"]
        for kind, entry in self.to_dict().items():
            line = f"  {entry['count']:6d} {entry['description']}"
            if entry["details"]:
                line += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(entry["details"].items())) + ")"
            if entry["examples"]:
                line += "; e.g. " + "; ".join(entry["examples"])
            lines.append(line)
        return "\n".join(lines)

    def log(self) -> None:
        """Log the summary once (WARNING when something was fixed, INFO otherwise)."""
        if self:
            logger.warning(self.summary())
        else:
            logger.info(self.summary())
