"""The compact index (detkit/data/index.py), the one-pass COCO reader and its cache: the same samples,
fixes and reports as the per-image reader before them (tests/data/coco_reference.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.scale_data import make_coco
from detkit.data.coco import COCODataset
from detkit.data.index import AnnotationIndex
from detkit.data.report import DataReport
from detkit.data.sanitize import sanitize_boxes, sanitize_groups
from detkit.data.synthetic import prepare_synthetic
from detkit.data.voc import VOCDataset
from detkit.data.yolo import YOLODataset
from tests.data.coco_reference import reference_coco
from tests.data.data_helpers import tiny_synthetic_config, write_coco, write_image
from tests.data.sanitize_reference import reference_sanitize_boxes


def _flawed_groups(seed: int):
    rng = np.random.default_rng(seed)
    groups = int(rng.integers(0, 30))
    sizes = rng.integers(5, 60, size=(max(groups, 1), 2))
    parts = []
    for g in range(groups):
        n = int(rng.integers(0, 12))
        h, w = sizes[g]
        xy = rng.uniform(-10, max(w, h) + 10, size=(n, 2)).round(int(rng.integers(0, 2)))
        box = np.concatenate([xy, xy + rng.uniform(-3, 30, size=(n, 2)).round(int(rng.integers(0, 2)))], 1)
        if n > 1 and rng.random() < 0.5:
            box[-1] = box[0]  # exact duplicate
        if n > 2 and rng.random() < 0.5:
            box[1] = box[0] + 0.5  # near duplicate
        if n and rng.random() < 0.3:
            box[0, int(rng.integers(4))] = rng.choice([np.nan, np.inf, -0.0])
        parts.append((box, rng.integers(1, 3, size=n)))
    return sizes, parts


@pytest.mark.parametrize("seed", range(60))
def test_sanitize_groups_and_boxes_match_the_per_image_reference(seed):
    # sanitize_boxes is sanitize_groups with one group; both are held to the old per-image loop
    sizes, parts = _flawed_groups(seed)
    ref_report, report, single_report = DataReport("x"), DataReport("x"), DataReport("x")
    expected = [reference_sanitize_boxes(b, lab, tuple(int(v) for v in sizes[g]), ref_report, f"img{g}")
                for g, (b, lab) in enumerate(parts)]
    boxes = np.concatenate([b for b, _ in parts]) if parts else np.zeros((0, 4))
    labels = np.concatenate([lab for _, lab in parts]) if parts else np.zeros(0, np.int64)
    group = np.concatenate([np.full(len(b), g) for g, (b, _) in enumerate(parts)]) if parts else np.zeros(0, int)
    kept, out = sanitize_groups(boxes, labels, group, sizes, lambda g: f"img{g}", report)
    assert np.array_equal(out, np.concatenate([e[0] for e in expected]) if parts else np.zeros((0, 4)))
    assert out.dtype == np.float32
    assert np.array_equal(labels[kept], np.concatenate([e[1] for e in expected]) if parts else np.zeros(0))
    assert report.to_dict() == ref_report.to_dict()
    for g, (b, lab) in enumerate(parts):
        got_boxes, got_labels = sanitize_boxes(b, lab, tuple(int(v) for v in sizes[g]), single_report, f"img{g}")
        assert got_boxes.dtype == np.float32 and got_labels.dtype == np.int64
        assert np.array_equal(got_boxes, expected[g][0]) and np.array_equal(got_labels, expected[g][1])
    assert single_report.to_dict() == ref_report.to_dict()


def _same_records(dataset, records):
    assert len(dataset) == len(records)
    for i, r in enumerate(records):
        got = dataset.records[i]
        assert (got.image_id, got.path, got.file_name, tuple(got.size)) == (r.image_id, r.path, r.file_name,
                                                                            tuple(r.size))
        for key in ("boxes", "labels", "ignore_boxes", "ignore_labels"):
            a, b = getattr(got, key), getattr(r, key)
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), (i, key)
        ann = dataset.get_annotation(i)
        assert np.array_equal(ann["boxes"], r.boxes) and ann["file_name"] == r.file_name


def _flawed_coco(tmp_path: Path) -> tuple:
    """A generated COCO file with every flaw the reader handles, and its image folder."""
    ann_file, img_dir = make_coco(str(tmp_path / "gen"), num_images=300, seed=3)
    data = json.loads(Path(ann_file).read_text())
    images, anns = data["images"], data["annotations"]
    anns[0]["category_id"] = 999  # unknown class
    anns[1]["bbox"] = [float("nan"), 1, 2, 3]
    anns[2]["bbox"] = [-5.0, -5.0, 2.0, 2.0]  # entirely outside
    anns.append({"id": 10 ** 6, "image_id": images[0]["id"], "category_id": 1, "bbox": [1, 2, 3], "iscrowd": 0})
    images[1]["width"] = 999  # size mismatch
    images[2]["width"] = 640.0  # float size
    os.unlink(os.path.join(img_dir, images[3]["file_name"]))  # missing image
    truncated = os.path.join(img_dir, images[4]["file_name"])
    os.unlink(truncated)
    write_image(Path(truncated), size=(images[4]["height"], images[4]["width"]))
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:300])
    images.append({"id": images[5]["id"], "file_name": images[6]["file_name"], "width": 1, "height": 1})  # same id
    images.append({"file_name": "no_id.jpg"})
    Path(ann_file).write_text(json.dumps(data))
    return ann_file, img_dir


@pytest.mark.parametrize("drop_empty", [False, True])
def test_coco_index_matches_the_per_image_reader(tmp_path, drop_empty):
    ann_file, img_dir = _flawed_coco(tmp_path)
    flags = dict(skip_bad_images=True, ignore_unknown_classes=True, skip_bad_annotations=True, drop_empty=drop_empty)
    records, classes, category_ids, report, bad = reference_coco(ann_file, img_dir, **flags)
    for cache in (False, True, True):  # no cache, writing it, reading it
        ds = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False, index_cache=cache, cache_dir=None,
                         **flags)
        _same_records(ds, records)
        assert ds.report.to_dict() == report.to_dict()
        assert (ds.classes, ds.category_ids, ds.bad_annotations) == (classes, category_ids, bad)
    assert report["bad_image_skipped"] == 2 and report["size_mismatch"] >= 2 and report["crowd_ignored"] > 0


def test_coco_index_matches_on_the_synthetic_set(tmp_path):
    cfg = tiny_synthetic_config(tmp_path, num_train=40, empty_fraction=0.2)
    ann_file, img_dir = prepare_synthetic(cfg.data.synthetic, None)["train"]
    records, *_, report, _ = reference_coco(ann_file, img_dir)
    ds = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False)
    _same_records(ds, records)
    assert ds.report.to_dict() == report.to_dict()


def test_coco_errors_come_in_the_old_order(tmp_path):
    """Without the skip flags the first problem in image order is raised, as image-by-image reading did."""
    img_dir = tmp_path / "img"
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 20, "height": 10} for i in (1, 2)]
    write_image(img_dir / "1.jpg", size=(10, 20))
    ann = [{"id": 1, "image_id": 2, "category_id": 9, "bbox": [0, 0, 2, 2]}]
    path = write_coco(tmp_path / "a.json", images, ann, [{"id": 1, "name": "a"}])
    with pytest.raises(Exception, match="does not exist"):  # image 2 is missing: met before its unknown class
        COCODataset(ann_file=path, img_dir=img_dir, log_report=False)
    write_image(img_dir / "2.jpg", size=(10, 20))
    with pytest.raises(Exception, match="category_id 9"):
        COCODataset(ann_file=path, img_dir=img_dir, log_report=False)


def test_cache_follows_file_changes(tmp_path):
    ann_file, img_dir = make_coco(str(tmp_path / "gen"), num_images=30, seed=4)
    first = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False, index_cache=True, cache_dir=None)
    cache = Path(ann_file).parent / f".{Path(ann_file).name}.detkit-index.npz"
    assert cache.is_file()
    data = json.loads(Path(ann_file).read_text())
    data["annotations"] = data["annotations"][:5]
    Path(ann_file).write_text(json.dumps(data))  # a changed file is parsed again
    changed = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False, index_cache=True, cache_dir=None)
    assert changed.index.num_boxes + len(changed.index.ignore_boxes) <= 5 < first.index.num_boxes
    victim = os.path.join(img_dir, data["images"][0]["file_name"])
    os.unlink(victim)  # a hard link to the pool: replace it by a truncated file of its own
    Path(victim).write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 50)
    again = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False, index_cache=True, cache_dir=None,
                        skip_bad_images=True)
    assert again.report["bad_image_skipped"] == 1 and len(again) == len(changed) - 1


def test_cache_goes_to_the_cache_folder_when_the_data_folder_is_not_writable(tmp_path):
    ann_file, img_dir = make_coco(str(tmp_path / "gen"), num_images=10, seed=5)
    # a folder where the cache file would go: writing beside the annotation file fails, as in a read-only folder
    (Path(ann_file).parent / f".{Path(ann_file).name}.detkit-index.npz").mkdir()
    ds = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False, index_cache=True,
                     cache_dir=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("*.detkit-index.npz"))) == 1
    again = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False, index_cache=True,
                        cache_dir=str(tmp_path / "cache"))
    _same_records(again, list(ds.records))
    assert again.report.to_dict() == ds.report.to_dict()


def test_index_round_trip_and_take_on_bccd_voc_and_yolo(bccd_root, tmp_path):
    voc = VOCDataset(roots=[bccd_root], splits=["train"], log_report=False)
    records = list(voc.records)
    index = AnnotationIndex.from_records(records)
    for i in (0, len(records) // 2, len(records) - 1):
        _same_records_one(index.record(i), records[i])
    picked = [5, 0, 3, 3]
    part = index.take(picked)
    for k, i in enumerate(picked):
        _same_records_one(part.record(k), records[i])
    root = tmp_path / "yolo"
    for k in range(3):
        write_image(root / "images" / f"{k}.jpg", size=(30, 40), seed=k)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{k}.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\nbad line\n1 1.2 0.5 0.5 0.5\n")
    yolo = YOLODataset(roots=[root], classes=["a", "b"], log_report=False)
    assert yolo.report["duplicate_dropped"] == 3 and yolo.report["clipped"] == 3
    _same_records_one(AnnotationIndex.from_records(list(yolo.records)).record(2), yolo.records[2])


def _same_records_one(a, b) -> bool:
    assert (a.image_id, a.path, a.file_name, tuple(a.size)) == (b.image_id, b.path, b.file_name, tuple(b.size))
    for key in ("boxes", "labels", "ignore_boxes", "ignore_labels"):
        assert np.array_equal(getattr(a, key), getattr(b, key)) and getattr(a, key).dtype == getattr(b, key).dtype
    return True
