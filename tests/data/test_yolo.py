"""YOLO-format data sets: layouts, class names, every line flaw counted, bad files listed together, training."""

import json

import numpy as np
import pytest
from PIL import Image

from detkit.config import load_config
from detkit.data.formats import build_dataset
from detkit.data.yolo import YOLODataset, find_yolo_folders, parse_yolo_labels, read_yolo_names
from detkit.errors import DataError


def _image(path, w=40, h=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _labels(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _ultralytics(root, split="train"):
    _image(root / "images" / split / "a.jpg")
    _labels(root / "labels" / split / "a.txt", "0 0.5 0.5 0.5 0.5\n1 0.25 0.25 0.1 0.2\n")
    _image(root / "images" / split / "b.png")
    (root / "data.yaml").write_text("names: [cat, dog]\n")


def test_ultralytics_layout_boxes_in_pixels(tmp_path):
    _ultralytics(tmp_path)
    ds = YOLODataset(roots=[tmp_path], splits=["train"], log_report=False)
    assert ds.classes == ["cat", "dog"] and len(ds) == 2
    a = ds.get_annotation(0)
    np.testing.assert_allclose(a["boxes"], [[10, 7.5, 30, 22.5], [8, 4.5, 12, 10.5]], atol=1e-4)
    assert a["labels"].tolist() == [1, 2] and a["file_name"] == "a.jpg"
    b = ds.get_annotation(1)
    assert b["boxes"].shape == (0, 4)  # no label file: a negative image, counted
    assert ds.report["yolo_negative_no_label"] == 1
    assert ds[0]["image"].shape == (30, 40, 3)


@pytest.mark.parametrize("layout", ["split_first", "side_by_side", "no_split"])
def test_other_layouts(tmp_path, layout):
    if layout == "split_first":  # Roboflow: valid/images + valid/labels
        _image(tmp_path / "valid" / "images" / "x.jpg")
        _labels(tmp_path / "valid" / "labels" / "x.txt", "0 0.5 0.5 0.2 0.2\n")
        splits = ["val"]
    elif layout == "side_by_side":
        _image(tmp_path / "x.jpg")
        _labels(tmp_path / "x.txt", "0 0.5 0.5 0.2 0.2\n")
        splits = []
    else:
        _image(tmp_path / "images" / "x.jpg")
        _labels(tmp_path / "labels" / "x.txt", "0 0.5 0.5 0.2 0.2\n")
        splits = []
    ds = YOLODataset(roots=[tmp_path], splits=splits, classes=["thing"], log_report=False)
    assert len(ds) == 1 and len(ds.get_annotation(0)["boxes"]) == 1


def test_a_missing_split_names_what_was_tried(tmp_path):
    _ultralytics(tmp_path)
    with pytest.raises(DataError, match="images/test"):
        find_yolo_folders(str(tmp_path), "test")


def test_names_files(tmp_path):
    (tmp_path / "d.yaml").write_text("names:\n  0: person\n  1: car\n")
    assert read_yolo_names(str(tmp_path / "d.yaml")) == ["person", "car"]
    (tmp_path / "c.txt").write_text("a\n\nb\n")
    assert read_yolo_names(str(tmp_path / "c.txt")) == ["a", "b"]
    (tmp_path / "bad.yaml").write_text("names:\n  0: a\n  2: b\n")
    with pytest.raises(DataError, match="0..1"):
        read_yolo_names(str(tmp_path / "bad.yaml"))
    _image(tmp_path / "r" / "x.jpg")
    with pytest.raises(DataError, match="no class names; give data.classes"):
        YOLODataset(roots=[tmp_path / "r"], log_report=False)


def test_every_line_flaw_is_counted_and_good_lines_kept(tmp_path):
    _image(tmp_path / "x.jpg", w=100, h=100)
    _labels(tmp_path / "x.txt", "\n".join([
        "0 0.5 0.5 0.2 0.2",           # good
        "1 0.5 0.5 0.2",               # too few values
        "cat 0.5 0.5 0.2 0.2",         # not a number
        "0.5 0.5 0.5 0.2 0.2",         # class not an index
        "0 0.95 0.5 0.2 0.2",          # reaches outside [0, 1]: clipped
        "0 0.5 0.5 0 0.2",             # zero width: dropped
        "0 nan 0.5 0.2 0.2",           # non-finite: dropped
        "1 0.1 0.1 0.3 0.1 0.3 0.3",   # polygon (YOLO-seg): its bounding box
        "", "   ",
    ]))
    objects, problems = parse_yolo_labels(str(tmp_path / "x.txt"))
    assert len(problems) == 3 and "x.txt:2" in problems[0]
    ds = YOLODataset(roots=[tmp_path], classes=["a", "b"], log_report=False)
    r = ds.report
    assert r["malformed_line_dropped"] == 3 and r["clipped"] == 1 and r["degenerate_dropped"] == 2
    ann = ds.get_annotation(0)
    np.testing.assert_allclose(ann["boxes"], [[40, 40, 60, 60], [85, 40, 100, 60], [10, 10, 30, 30]], atol=1e-3)
    assert ann["labels"].tolist() == [1, 1, 2]


def test_class_index_outside_the_list(tmp_path):
    _image(tmp_path / "x.jpg")
    _labels(tmp_path / "x.txt", "0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(DataError, match="line 2: class index 5 but the class list has 2 names"):
        YOLODataset(roots=[tmp_path], classes=["a", "b"], log_report=False)
    ds = YOLODataset(roots=[tmp_path], classes=["a", "b"], ignore_unknown_classes=True, log_report=False)
    assert ds.report["unknown_class_dropped"] == 1 and len(ds.get_annotation(0)["boxes"]) == 1


def test_unreadable_label_files_are_listed_together_or_skipped(tmp_path):
    for name in ("x", "y", "z"):
        _image(tmp_path / f"{name}.jpg")
    _labels(tmp_path / "x.txt", "0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "y.txt").write_bytes(b"\xff\xfe\x00\x81 binary")
    (tmp_path / "z.txt").write_bytes(b"\x80\x81\x82")
    with pytest.raises(DataError) as info:
        YOLODataset(roots=[tmp_path], classes=["a"], log_report=False)
    assert "2 of 3 label files" in str(info.value) and "y.txt" in str(info.value) and "z.txt" in str(info.value)
    ds = YOLODataset(roots=[tmp_path], classes=["a"], skip_bad_annotations=True, log_report=False)
    assert len(ds) == 1 and ds.report["bad_annotation_skipped"] == 2


def test_bad_images_are_skipped_with_the_setting(tmp_path):
    _image(tmp_path / "x.jpg")
    (tmp_path / "y.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(DataError, match="skip_bad_images"):
        YOLODataset(roots=[tmp_path], classes=["a"], log_report=False)
    ds = YOLODataset(roots=[tmp_path], classes=["a"], skip_bad_images=True, log_report=False)
    assert len(ds) == 1 and ds.report["bad_image_skipped"] == 1


def test_byte_order_mark_and_hidden_files(tmp_path):
    _image(tmp_path / "x.jpg")
    (tmp_path / "x.txt").write_bytes("\ufeff0 0.5 0.5 0.2 0.2\r\n".encode("utf-8"))
    (tmp_path / "._x.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS metadata, not an image
    ds = YOLODataset(roots=[tmp_path], classes=["a"], log_report=False)
    assert len(ds) == 1 and len(ds.get_annotation(0)["boxes"]) == 1 and not ds.report


def test_split_file_of_image_paths(tmp_path):
    _ultralytics(tmp_path)
    (tmp_path / "train.txt").write_text("images/train/a.jpg\n")
    ds = YOLODataset(roots=[tmp_path], split_file="train.txt", log_report=False)
    assert len(ds) == 1 and len(ds.get_annotation(0)["boxes"]) == 2


def _yolo_set(root, n, split, seed):
    """Shapes on noise with YOLO labels: class 0 light squares, class 1 dark squares."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = rng.integers(90, 160, (64, 64, 3), dtype=np.uint8)
        lines = []
        for _ in range(int(rng.integers(1, 3))):
            cls = int(rng.integers(0, 2))
            s = int(rng.integers(14, 26))
            x, y = int(rng.integers(0, 64 - s)), int(rng.integers(0, 64 - s))
            img[y:y + s, x:x + s] = 250 if cls == 0 else 10
            lines.append(f"{cls} {(x + s / 2) / 64:.6f} {(y + s / 2) / 64:.6f} {s / 64:.6f} {s / 64:.6f}")
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "images" / split / f"{i}.png")
        (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")


def test_yolo_data_trains_with_only_a_config_change(tmp_path):
    from detkit.engine.trainer import Trainer
    from tests.engine.conftest import tiny_overrides

    root = tmp_path / "yolo"
    _yolo_set(root, 8, "train", 0)
    _yolo_set(root, 4, "val", 1)
    (root / "data.yaml").write_text("names: [light, dark]\n")
    overrides = tiny_overrides(tmp_path, **{"train.max_iters": 2})
    overrides = [o for o in overrides if not o.startswith("data.format=")]
    cfg = load_config(None, overrides + ["data.format=yolo", f"data.train.roots=[{root}]", "data.train.splits=[train]",
                                         f"data.val.roots=[{root}]", "data.val.splits=[val]"])
    assert build_dataset(cfg, "val", log_report=False).classes == ["light", "dark"]
    metrics = Trainer(cfg, quiet=True, log=lambda *_: None).run()
    assert metrics["num_images"] == 4
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["per_class"].keys() == {"light", "dark"}


def test_converter_writes_coco_that_reads_back_the_same_boxes(tmp_path):
    from detkit.data.coco import COCODataset
    from tests.data.tools_runner import run_tool

    root = tmp_path / "yolo"
    _yolo_set(root, 5, "val", 2)
    (root / "classes.txt").write_text("light\ndark\n")
    out = tmp_path / "val.json"
    assert run_tool("voc2coco.py", "--format", "yolo", "--root", str(root), "--split", "val", "--out", str(out)) == 0
    yolo = YOLODataset(roots=[root], splits=["val"], log_report=False)
    coco = COCODataset(ann_file=str(out), img_dir=str(root / "images" / "val"), log_report=False)
    assert coco.classes == yolo.classes and len(coco) == len(yolo)
    for i in range(len(yolo)):
        a, b = yolo.get_annotation(i), coco.get_annotation(i)
        np.testing.assert_allclose(b["boxes"], a["boxes"], atol=1e-4)
        assert b["labels"].tolist() == a["labels"].tolist() and b["file_name"] == a["file_name"]


def test_rounding_overshoot_clipped_silently_real_overshoot_counted(tmp_path):
    """Labels written with 6 decimals overshoot the image by ~1e-4 px once denormalised: clipped, not
    counted (sanitize.CLIP_TOLERANCE_PX); a box 5 px outside is clipped and counted. Both end up exactly
    inside the image."""
    _image(tmp_path / "x.jpg", w=640, h=480)
    _labels(tmp_path / "x.txt", "\n".join([
        "0 0.500000 0.500000 1.000001 1.000001",   # 6-decimal rounding: -0.00032 .. 640.00032 px
        "0 0.750000 0.500000 0.500001 0.400000",   # right edge at 1.0000005 (x 640.00032)
        "0 0.500000 0.500000 1.0000008 0.500000",  # edges at -0.0000004 and 1.0000004 of the width
        "0 0.900000 0.500000 0.215625 0.200000",   # right edge at x 645: 5 px outside
    ]) + "\n")
    ds = YOLODataset(roots=[tmp_path], classes=["a"], log_report=False)
    assert ds.report["clipped"] == 1 and ds.report["degenerate_dropped"] == 0
    assert "645" in ds.report.examples["clipped"][0]
    boxes = ds.get_annotation(0)["boxes"]
    assert boxes.dtype == np.float32 and len(boxes) == 4
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 640).all()
    assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 480).all()
    assert boxes[0].tolist() == [0, 0, 640, 480]
    assert boxes[1, 2] == 640 and boxes[2, 0] == 0 and boxes[2, 2] == 640 and boxes[3, 2] == 640
