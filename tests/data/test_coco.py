"""detkit/data/coco.py and coco_export.py: category mapping, crowd, empty images, flaws, voc2coco round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from data_helpers import write_coco, write_image, write_voc

from detkit.atomic_io import write_json_atomic
from detkit.data.coco import COCODataset, coco_box_to_xyxy, xyxy_to_coco_box
from detkit.data.coco_export import dataset_to_coco
from detkit.data.voc import VOCDataset
from detkit.errors import DataError

CATS = [{"id": 10, "name": "zebra"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def _coco_folder(tmp_path, annotations, n_images=3, categories=CATS):
    images = []
    for i in range(n_images):
        write_image(tmp_path / "img" / f"im{i}.jpg", (40, 60), seed=i)
        images.append({"id": 100 + i, "file_name": f"im{i}.jpg", "width": 60, "height": 40})
    return write_coco(tmp_path / "ann.json", images, annotations, categories)


def _ann(i, image_id, cat, bbox, crowd=0):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": crowd, "area": 1.0}


def test_box_convention():
    assert coco_box_to_xyxy(2, 3, 10, 20) == [2, 3, 12, 23]
    assert xyxy_to_coco_box(*coco_box_to_xyxy(2.5, 3, 10, 20)) == [2.5, 3, 10, 20]


def test_category_ids_to_contiguous_labels_and_back(tmp_path):
    path = _coco_folder(tmp_path, [_ann(1, 100, 10, [1, 1, 5, 5]), _ann(2, 100, 3, [2, 2, 5, 5]),
                                   _ann(3, 101, 7, [0, 0, 60, 40])])
    ds = COCODataset(ann_file=path, img_dir=tmp_path / "img", log_report=False)
    assert ds.classes == ["cat", "dog", "zebra"] and ds.category_ids == [3, 7, 10]
    assert ds.get_annotation(0)["labels"].tolist() == [3, 1]
    assert ds.get_annotation(0)["boxes"].tolist() == [[1, 1, 6, 6], [2, 2, 7, 7]]
    assert [ds.category_ids[k - 1] for k in ds.get_annotation(1)["labels"]] == [7]
    assert ds.get_annotation(0)["image_id"] == 100
    by_name = COCODataset(ann_file=path, img_dir=tmp_path / "img", classes=["zebra", "cat", "dog"], log_report=False)
    assert by_name.category_ids == [10, 3, 7] and by_name.get_annotation(0)["labels"].tolist() == [1, 2]


def test_crowd_becomes_ignore_and_empty_images_kept_or_dropped(tmp_path):
    path = _coco_folder(tmp_path, [_ann(1, 100, 3, [1, 1, 5, 5]), _ann(2, 100, 7, [10, 10, 20, 20], crowd=1),
                                   _ann(3, 101, 7, [5, 5, 5, 5], crowd=1)])
    ds = COCODataset(ann_file=path, img_dir=tmp_path / "img", log_report=False)
    assert len(ds) == 3
    ann = ds.get_annotation(0)
    assert ann["ignore_boxes"].tolist() == [[10, 10, 30, 30]] and ann["ignore_labels"].tolist() == [2]
    assert ds.report["crowd_ignored"] == 2
    assert len(ds.get_annotation(2)["boxes"]) == 0
    dropped = COCODataset(ann_file=path, img_dir=tmp_path / "img", drop_empty=True, log_report=False)
    assert len(dropped) == 1 and dropped.report["empty_dropped"] == 2  # crowd-only counts as empty


def test_degenerate_and_clipped(tmp_path):
    path = _coco_folder(tmp_path, [_ann(1, 100, 3, [1, 1, 0, 5]), _ann(2, 100, 3, [1, 1, 5, -2]),
                                   _ann(3, 100, 3, [50, 30, 20, 20]), _ann(4, 100, 3, [1, 1, 5, 5])])
    ds = COCODataset(ann_file=path, img_dir=tmp_path / "img", log_report=False)
    assert ds.report["degenerate_dropped"] == 2 and ds.report["clipped"] == 1
    assert ds.get_annotation(0)["boxes"].tolist() == [[50, 30, 60, 40], [1, 1, 6, 6]]


def test_unparsable_json(tmp_path):
    (tmp_path / "bad.json").write_text('{"images": [1, 2,')
    with pytest.raises(DataError, match=r"bad\.json.*not valid JSON"):
        COCODataset(ann_file=tmp_path / "bad.json", img_dir=tmp_path)
    (tmp_path / "odd.json").write_text('{"annotations": []}')
    with pytest.raises(DataError, match=r"odd\.json.*'images'"):
        COCODataset(ann_file=tmp_path / "odd.json", img_dir=tmp_path)


def test_missing_image_raises_or_is_skipped(tmp_path):
    path = _coco_folder(tmp_path, [_ann(1, 100, 3, [1, 1, 5, 5])])
    (tmp_path / "img" / "im1.jpg").unlink()
    with pytest.raises(DataError, match=r"im1\.jpg"):
        COCODataset(ann_file=path, img_dir=tmp_path / "img", log_report=False)
    ds = COCODataset(ann_file=path, img_dir=tmp_path / "img", skip_bad_images=True, log_report=False)
    assert len(ds) == 2 and ds.report["bad_image_skipped"] == 1


def test_unknown_category_raises_or_is_dropped(tmp_path):
    path = _coco_folder(tmp_path, [_ann(1, 100, 3, [1, 1, 5, 5]), _ann(2, 100, 99, [1, 1, 5, 5])])
    with pytest.raises(DataError, match="category_id 99"):
        COCODataset(ann_file=path, img_dir=tmp_path / "img", log_report=False)
    ds = COCODataset(ann_file=path, img_dir=tmp_path / "img", ignore_unknown_classes=True, log_report=False)
    assert ds.report["unknown_class_dropped"] == 1 and len(ds.get_annotation(0)["boxes"]) == 1
    with pytest.raises(DataError, match="no category named"):
        COCODataset(ann_file=path, img_dir=tmp_path / "img", classes=["cat", "horse"], log_report=False)


def _assert_same(a, b):
    assert a.classes == b.classes and len(a) == len(b)
    for i in range(len(a)):
        x, y = a.get_annotation(i), b.get_annotation(i)
        for key in ("boxes", "labels", "ignore_boxes", "ignore_labels"):
            assert np.array_equal(x[key], y[key]), (i, key)
        assert (x["image_id"], x["orig_size"], x["file_name"]) == (y["image_id"], y["orig_size"], y["file_name"])


def test_voc2coco_round_trip_generated(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 9, 9), ("dog", 3, 4, 70, 20, 1)],
                                        "b": [], "c": [("dog", 2.5, 2, 10, 11)]})
    voc = VOCDataset(roots=[root], splits=["train"], log_report=False)
    write_json_atomic(dataset_to_coco(voc), tmp_path / "out.json")
    coco = COCODataset(ann_file=tmp_path / "out.json", img_dir=root / "JPEGImages", log_report=False)
    _assert_same(voc, coco)
    assert len(coco.get_annotation(0)["ignore_boxes"]) == 1  # difficult -> iscrowd -> ignore


def test_voc2coco_round_trip_bccd(bccd_root, tmp_path):
    from tools_runner import run_tool

    out = tmp_path / "bccd_test.json"
    assert run_tool("voc2coco.py", "--root", str(bccd_root), "--split", "test", "--out", str(out)) == 0
    voc = VOCDataset(roots=[bccd_root], splits=["test"], log_report=False)
    coco = COCODataset(ann_file=out, img_dir=bccd_root / "JPEGImages", log_report=False)
    _assert_same(voc, coco)
    assert sum(len(coco.get_annotation(i)["boxes"]) for i in range(len(coco))) == 945


def test_every_invalid_entry_is_listed_in_one_pass_or_skipped(tmp_path):
    anns = [_ann(1, 100, 3, [1, 1, 10, 10]),
            _ann(2, 100, 3, [1, 1, 10]),              # bbox of 3 numbers
            _ann(3, 999, 3, [1, 1, 10, 10]),          # no such image
            {"id": 4, "image_id": 101, "bbox": [1, 1, 5, 5]},  # no category_id
            "not an object",
            _ann(6, 102, 7, ["a", 1, 2, 3]),          # not numbers
            _ann(7, 101, 10, [2, 2, 8, 8])]
    path = _coco_folder(tmp_path, anns)
    data = json.loads(open(path).read())
    data["images"].append({"id": 103, "width": 60, "height": 40})  # no file_name
    write_json_atomic(data, str(path))
    with pytest.raises(DataError) as info:
        COCODataset(ann_file=path, img_dir=tmp_path / "img")
    message = str(info.value)
    assert "6 of" in message and "skip_bad_annotations" in message
    for part in ("annotation 2 has bbox", "annotation 3 refers to image_id 999", "annotation 4 has no 'category_id'",
                 "annotation #4 is not a JSON object", "annotation 6 has bbox", "image 103 has no 'file_name'"):
        assert part in message, part
    ds = COCODataset(ann_file=path, img_dir=tmp_path / "img", skip_bad_annotations=True, log_report=False)
    assert len(ds) == 3 and ds.report["bad_annotation_skipped"] == 6 and len(ds.bad_annotations) == 6
    assert sum(len(ds.get_annotation(i)["boxes"]) for i in range(3)) == 2  # the two good annotations kept


def test_sub_pixel_overshoot_clipped_without_a_count(tmp_path):
    """Float boxes a hair past the border (60x40 images) are clipped silently (sanitize.CLIP_TOLERANCE_PX);
    the vectorised COCO path follows the same rule as VOC and YOLO."""
    path = _coco_folder(tmp_path, [_ann(1, 100, 3, [50, 30, 10.0003, 10.00004]), _ann(2, 100, 3, [-0.2, -0.7, 5, 5]),
                                   _ann(3, 101, 3, [50, 30, 12, 10])])  # the last: 2 px outside, counted
    ds = COCODataset(ann_file=path, img_dir=tmp_path / "img", log_report=False)
    assert ds.report["clipped"] == 1 and "[50.0, 30.0, 62.0, 40.0]" in ds.report.examples["clipped"][0]
    assert ds.get_annotation(0)["boxes"].tolist() == [[50, 30, 60, 40], [0, 0, 4.800000190734863, 4.300000190734863]]
    assert ds.get_annotation(1)["boxes"].tolist() == [[50, 30, 60, 40]]
