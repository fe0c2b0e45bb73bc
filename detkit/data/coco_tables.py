"""A COCO JSON file as arrays, parsed once and cached beside the file; image headers cached with it.

Shape shorthand: N images (sorted by id), A annotations (sorted by image, then file order).

:func:`read_coco_tables` does what COCODataset needs of ``json.load`` + pycocotools' index in one pass
(images by id, each image's annotations in file order, the invalid entries of
:func:`detkit.data.coco.invalid_coco_entries`), and keeps the result as a few arrays. With a cache
folder allowed, the arrays are written to ``.<file name>.detkit-index.npz`` beside the annotation file
(or, when that folder is read-only, into the cache folder) and read back while the file's size,
modification time and BLAKE2 hash are unchanged.

:class:`HeaderCache` keeps each image's header read (size and EXIF orientation, or why it is bad) in
the same file, keyed by the image's size and modification time, so a second run re-reads only the
headers of images that changed (missing files are always looked at again).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from detkit.data.dataset import read_image_header
from detkit.data.index import StringTable
from detkit.errors import DataError

__all__ = ["CocoTables", "read_coco_tables", "HeaderCache", "cache_paths", "DEFAULT_CACHE_DIR"]

DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "detkit", "index")
# 2: a header's orientation is the EXIF tag's value whatever it is (version 1 stored an invalid tag of 0
# as 1, upright, which the data report could then not count as invalid).
_VERSION = 2


@dataclass
class CocoTables:
    """What COCODataset reads from a COCO file.

    Attributes:
        image_ids: int64 (N,) sorted; file_names: N strings.
        json_sizes: float64 (N, 2) the JSON (height, width), NaN where not a positive number;
        json_size_is_int: bool (N, 2) whether each was written as an integer (for messages).
        ann_image: int64 (A,) image position; ann_ids: int64 (A,) annotation ids;
        ann_category: int64 (A,) index into ``category_values`` (the category_id values of the file);
        ann_boxes: float64 (A, 4) x1, y1, x2, y2 (COCO x, y, x + w, y + h); ann_crowd: bool (A,).
        categories: the valid category entries ({"id", "name"}); problems: the invalid entries' messages;
        num_entries: images + annotations + invalid entries (what a bad-entry message counts against).
    """

    image_ids: np.ndarray
    file_names: List[str]
    json_sizes: np.ndarray
    json_size_is_int: np.ndarray
    ann_image: np.ndarray
    ann_ids: np.ndarray
    ann_category: np.ndarray
    category_values: list
    ann_boxes: np.ndarray
    ann_crowd: np.ndarray
    categories: List[dict]
    problems: List[str]
    num_entries: int


def _positive_number(v) -> bool:
    return isinstance(v, (int, float)) and v > 0


def _tables_from_data(data: dict, problems: List[str], ann_file: str) -> CocoTables:
    images = {}
    for img in data["images"]:  # a repeated id keeps its last entry (as pycocotools does)
        images[img["id"]] = img
    image_ids = sorted(images)
    pos_of = {image_id: k for k, image_id in enumerate(image_ids)}
    infos = [images[i] for i in image_ids]
    sizes = [(info.get("height"), info.get("width")) for info in infos]
    ok = [_positive_number(h) and _positive_number(w) for h, w in sizes]
    json_sizes = np.array([(float(h), float(w)) if good else (np.nan, np.nan) for (h, w), good in zip(sizes, ok)],
                          dtype=np.float64).reshape(-1, 2)
    is_int = np.array([(isinstance(h, int), isinstance(w, int)) for h, w in sizes], dtype=bool).reshape(-1, 2)
    anns = data["annotations"]
    category_index: Dict[object, int] = {}
    try:
        ann_category = np.fromiter((category_index.setdefault(a["category_id"], len(category_index)) for a in anns),
                                   dtype=np.int64, count=len(anns))
        ann_image = np.fromiter((pos_of[a["image_id"]] for a in anns), dtype=np.int64, count=len(anns))
    except TypeError as exc:
        raise DataError(f"COCO annotation file '{ann_file}' is malformed: missing or wrong field {exc}") from None
    ann_ids = [a["id"] for a in anns]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ann_ids):
        ann_ids = list(range(len(anns)))  # only named in messages; non-integer ids are shown by position
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # coco_box_to_xyxy
    crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in anns), dtype=bool, count=len(anns))
    order = np.argsort(ann_image, kind="stable")
    return CocoTables(image_ids=np.array(image_ids, dtype=np.int64), file_names=[str(i["file_name"]) for i in infos],
                      json_sizes=json_sizes, json_size_is_int=is_int, ann_image=ann_image[order],
                      ann_ids=np.array(ann_ids, dtype=np.int64)[order], ann_category=ann_category[order],
                      category_values=list(category_index), ann_boxes=boxes[order], ann_crowd=crowd[order],
                      categories=[{"id": c["id"], "name": c["name"]} for c in data["categories"]],
                      problems=list(problems),
                      num_entries=len(data["images"]) + len(anns) + len(problems))


def _signature(path: str) -> dict:
    st = os.stat(path)
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "blake2b": digest.hexdigest()}


def cache_paths(ann_file: str, cache_dir: Optional[str]) -> List[str]:
    """Where the cache of `ann_file` may be: beside it, then in `cache_dir` (None: only beside it)."""
    ann_file = os.path.abspath(ann_file)
    folder, base = os.path.split(ann_file)
    paths = [os.path.join(folder, f".{base}.detkit-index.npz")]
    if cache_dir is not None:
        key = hashlib.blake2b(ann_file.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
        paths.append(os.path.join(os.path.expanduser(cache_dir), f"{base}.{key}.detkit-index.npz"))
    return paths


def _load_cache(paths: Sequence[str]) -> Tuple[Optional[dict], Optional[str]]:
    for path in paths:
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            meta = json.loads(bytes(arrays.pop("meta")).decode("utf-8"))
            if meta.get("version") == _VERSION:
                return {"meta": meta, **arrays}, path
        except (OSError, ValueError, KeyError, UnicodeDecodeError):
            continue
    return None, None


def _write_cache(paths: Sequence[str], arrays: dict, meta: dict) -> Optional[str]:
    """Write the cache to the first writable place (atomically); None when none is writable."""
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8), **arrays)
    for path in paths:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".npz")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(buffer.getbuffer())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return path
        except OSError:
            continue
    return None


_TABLE_ARRAYS = ("image_ids", "json_sizes", "json_size_is_int", "ann_image", "ann_ids", "ann_category",
                 "ann_boxes", "ann_crowd")


def read_coco_tables(ann_file: str, load_data, cache: Optional[dict]) -> CocoTables:
    """The tables of `ann_file`: from the cache when it matches the file, else parsed (``load_data(ann_file)``
    returns (validated data dict, problems)) and, with a cache, stored into it.

    Args:
        cache: the dict :meth:`HeaderCache.open` gives (its "tables" entry is read and set), or None.
    """
    if cache is not None:
        cached = cache.get("loaded")
        if cached is not None and cached["meta"].get("signature") == cache["signature"]:
            meta = cached["meta"]
            names = StringTable(meta["names_folders"], cached["names_folder_index"], cached["names_data"],
                                cached["names_offsets"])
            return CocoTables(**{k: cached[k] for k in _TABLE_ARRAYS}, file_names=names.to_list(),
                              category_values=meta["category_values"], categories=meta["categories"],
                              problems=meta["problems"], num_entries=meta["num_entries"])
    data, problems = load_data(ann_file)
    tables = _tables_from_data(data, problems, ann_file)
    if cache is not None:
        cache["tables"] = tables
    return tables


def _tables_cacheable(tables: CocoTables) -> bool:
    try:
        json.dumps([tables.category_values, tables.categories, tables.problems])
    except (TypeError, ValueError):
        return False
    return True


class HeaderCache:
    """Image headers (see :func:`detkit.data.dataset.read_image_header`) of one annotation file's images,
    remembered by path with the file's size and modification time."""

    def __init__(self, ann_file: str, cache_dir: Optional[str], enabled: bool) -> None:
        self.enabled = enabled
        self.paths = cache_paths(ann_file, cache_dir)
        self.state: Optional[dict] = None
        self._known: Dict[str, Tuple[int, int, Union[Tuple[int, int, int], str]]] = {}
        self.hits = self.misses = 0
        if enabled:
            loaded, _ = _load_cache(self.paths)
            self.state = {"signature": _signature(ann_file), "loaded": loaded}
            if loaded is not None and "header_stat" in loaded:
                meta = loaded["meta"]
                table = StringTable(meta["header_folders"], loaded["header_folder_index"], loaded["header_data"],
                                    loaded["header_offsets"])
                errors = {int(k): v for k, v in meta["header_errors"].items()}
                for k, path in enumerate(table.to_list()):
                    size, mtime = (int(v) for v in loaded["header_stat"][k])
                    header = errors.get(k) or tuple(int(v) for v in loaded["header_hwo"][k])
                    self._known[path] = (size, mtime, header)

    def read(self, paths: Sequence[str]) -> List[Union[Tuple[int, int, int], str]]:
        """The header of every path (in order), from the cache where the file is unchanged."""
        out: List[Union[Tuple[int, int, int], str, None]] = [None] * len(paths)
        todo, stats = [], {}
        for k, path in enumerate(paths):
            known = self._known.get(path) if self.enabled else None
            try:
                st = os.stat(path) if self.enabled else None
            except OSError:
                st = None
            if known is not None and st is not None and (st.st_size, st.st_mtime_ns) == known[:2]:
                out[k] = known[2]
                self.hits += 1
            else:
                todo.append(k)
                if st is not None:
                    stats[k] = (st.st_size, st.st_mtime_ns)
        self.misses += len(todo)
        # One after the other: a header read is mostly Python work under the GIL, and threads made it
        # 2.5x slower on two cores, with the files in the page cache and just after dropping it.
        for k in todo:
            out[k] = header = read_image_header(paths[k])
            if k in stats:
                self._known[paths[k]] = (*stats[k], header)
        return out  # type: ignore[return-value]

    def save(self) -> Optional[str]:
        """Write the tables and headers when something new was read; returns the file written (or None)."""
        if not self.enabled or (self.misses == 0 and self.state.get("tables") is None):
            return None
        loaded, tables = self.state.get("loaded"), self.state.get("tables")
        arrays: dict = {}
        meta: dict = {"version": _VERSION}
        if tables is not None and _tables_cacheable(tables):
            arrays.update({k: getattr(tables, k) for k in _TABLE_ARRAYS})
            names = StringTable.from_strings(tables.file_names)
            arrays.update(names_folder_index=names.folder_index, names_data=names.data, names_offsets=names.offsets)
            meta.update(signature=self.state["signature"], names_folders=names.folders,
                        category_values=tables.category_values, categories=tables.categories,
                        problems=tables.problems, num_entries=tables.num_entries)
        elif loaded is not None and loaded["meta"].get("signature") == self.state["signature"]:
            keep = [k for k in loaded if k.startswith("names_")] + list(_TABLE_ARRAYS)
            arrays.update({k: loaded[k] for k in keep if k in loaded})
            meta.update({k: v for k, v in loaded["meta"].items() if not k.startswith("header_")})
        paths = list(self._known)
        table = StringTable.from_strings(paths)
        entries = [self._known[p] for p in paths]
        arrays.update(header_folder_index=table.folder_index, header_data=table.data, header_offsets=table.offsets,
                      header_stat=np.array([e[:2] for e in entries], dtype=np.int64).reshape(-1, 2),
                      header_hwo=np.array([e[2] if not isinstance(e[2], str) else (0, 0, 0) for e in entries],
                                          dtype=np.int64).reshape(-1, 3))
        meta.update(header_folders=table.folders,
                    header_errors={str(k): e[2] for k, e in enumerate(entries) if isinstance(e[2], str)})
        return _write_cache(self.paths, arrays, meta)
