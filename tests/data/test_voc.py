"""detkit/data/voc.py: BCCD as the files say, its real flaws, and every flaw kind in generated folders."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
from data_helpers import voc_xml, write_image, write_voc

from detkit.config import config_from_dict
from detkit.data.formats import build_dataset
from detkit.data.voc import VOCDataset, voc_box_to_xyxy, xyxy_to_voc_box
from detkit.errors import DataError


# --------------------------------------------------------------------------- BCCD
def _file_counts(root, ids):
    """Per-class object counts straight from the XML text (independent of detkit's parser)."""
    counts = Counter()
    for i in ids:
        for obj in ET.parse(root / "Annotations" / f"{i}.xml").getroot().iter("object"):
            counts[obj.findtext("name")] += 1
    return counts


def test_bccd_all_annotations_parse(bccd_root):
    ds = VOCDataset(roots=[bccd_root], splits=[], log_report=False)  # every XML file
    assert len(ds) == 364
    ids = [p.stem for p in sorted((bccd_root / "Annotations").glob("*.xml"))]
    files = _file_counts(bccd_root, ids)
    assert files == {"RBC": 4155, "WBC": 372, "Platelets": 361}
    labels = np.concatenate([ds.get_annotation(i)["labels"] for i in range(len(ds))])
    got = {c: int((labels == k + 1).sum()) for k, c in enumerate(ds.classes)}
    assert ds.classes == ["Platelets", "RBC", "WBC"]
    # the files' counts minus the two zero-size RBC boxes that are dropped
    assert got == {"Platelets": 361, "RBC": 4155 - 2, "WBC": 372}


@pytest.mark.parametrize("split,n", [("train", 205), ("val", 87), ("test", 72), ("trainval", 292)])
def test_bccd_split_sizes_and_class_counts(bccd_root, split, n):
    ds = VOCDataset(roots=[bccd_root], splits=[split], log_report=False)
    assert len(ds) == n
    ids = (bccd_root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
    files = _file_counts(bccd_root, ids)
    labels = np.concatenate([ds.get_annotation(i)["labels"] for i in range(len(ds))])
    got = Counter({c: int((labels == k + 1).sum()) for k, c in enumerate(ds.classes)})
    assert got + Counter({"RBC": ds.report["degenerate_dropped"]}) == files
    assert all(size == (480, 640) for size in ds.image_sizes)


def test_bccd_flaws_found_and_reported_once(bccd_root, caplog):
    with caplog.at_level(logging.INFO, logger="detkit.data"):
        ds = VOCDataset(roots=[bccd_root], splits=[])
    records = [r for r in caplog.records if r.name == "detkit.data"]
    assert len(records) == 1  # one summary per data set, not one line per box
    r = ds.report
    assert r["degenerate_dropped"] == 2  # BloodImage_00338 and _00343: xmin == xmax, ymin == ymax
    assert r["near_duplicate"] == 7  # RBC boxes annotated twice, shifted by 2 px
    assert r["clipped"] == 0 and r["size_mismatch"] == 0 and r["bad_image_skipped"] == 0
    text = r.summary()
    assert "BloodImage_00338" in text and "BloodImage_00343" in text and "near-duplicate" in text
    # Boxes touching the right / bottom border (xmax = 640 = width) are inside: not clipped.
    assert max(float(ds.get_annotation(i)["boxes"][:, 2].max()) for i in range(len(ds))) == 640.0


def test_bccd_sample_and_annotation_agree(bccd_root):
    ds = VOCDataset(roots=[bccd_root], splits=["test"], log_report=False)
    sample, ann = ds[0], ds.get_annotation(0)
    assert sample["image"].shape == (480, 640, 3) and sample["image"].dtype == np.uint8
    for key in ann:
        assert np.array_equal(np.asarray(sample[key]), np.asarray(ann[key]))
    assert ann["boxes"].dtype == np.float32 and ann["labels"].dtype == np.int64
    assert ann["file_name"].endswith(".jpg")


def test_bccd_config_val_uses_training_classes(bccd_root):
    cfg = config_from_dict({"data": {"format": "voc", "train": {"roots": [str(bccd_root)], "splits": ["train"]},
                                     "val": {"roots": [str(bccd_root)], "splits": ["test"]}}})
    val = build_dataset(cfg, "val", log_report=False)
    assert val.classes == ["Platelets", "RBC", "WBC"] and len(val) == 72


# --------------------------------------------------------------------------- conventions
def test_pixel_convention():
    assert voc_box_to_xyxy(1, 1, 60, 40) == [0, 0, 60, 40]  # the whole 60x40 image
    assert xyxy_to_voc_box(*voc_box_to_xyxy(5, 7, 9, 11)) == [5, 7, 9, 11]


def test_full_image_box_and_sample_format(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 60, 40)]})
    ds = VOCDataset(roots=[root], splits=["train"], log_report=False)
    ann = ds.get_annotation(0)
    assert ann["boxes"].tolist() == [[0, 0, 60, 40]] and ann["orig_size"] == (40, 60)
    assert ds.category_ids == [1] and not ds.report


# --------------------------------------------------------------------------- flaws
def test_degenerate_dropped_and_outside_clipped_counted_once(tmp_path, caplog):
    objects = [("cat", 5, 5, 20, 20), ("cat", 10, 5, 10, 20), ("cat", 20, 5, 10, 20),  # ok, zero, negative
               ("cat", -5, 3, 30, 50), ("cat", 50, 30, 70, 45),  # reach outside 60x40: clipped
               ("cat", 100, 100, 120, 120),  # entirely outside: dropped
               ("cat", 5, 5, 20, 20)]  # exact duplicate of the first
    root = write_voc(tmp_path / "voc", {"a": objects, "b": [("cat", 0, 0, 70, 50)]})
    with caplog.at_level(logging.INFO, logger="detkit.data"):
        ds = VOCDataset(roots=[root], splits=["train"])
    assert len([r for r in caplog.records if r.name == "detkit.data"]) == 1
    r = ds.report
    assert r["degenerate_dropped"] == 3 and r["clipped"] == 3 and r["duplicate_dropped"] == 1
    a = ds.get_annotation(0)["boxes"].tolist()
    assert a == [[4, 4, 20, 20], [0, 2, 30, 40], [49, 29, 60, 40]]
    assert ds.get_annotation(1)["boxes"].tolist() == [[0, 0, 60, 40]]


def test_missing_image_raises_or_is_skipped(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 9, 9)], "b": [("cat", 1, 1, 9, 9)]})
    (root / "JPEGImages" / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"'b\.jpg'.*skip_bad_images"):
        VOCDataset(roots=[root], splits=["train"], log_report=False)
    ds = VOCDataset(roots=[root], splits=["train"], skip_bad_images=True, log_report=False)
    assert len(ds) == 1 and ds.report["bad_image_skipped"] == 1


def test_truncated_jpeg_raises_or_is_skipped(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 9, 9)], "b": [("cat", 1, 1, 9, 9)]})
    path = root / "JPEGImages" / "b.jpg"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DataError, match=r"b\.jpg.*truncated"):
        VOCDataset(roots=[root], splits=["train"], log_report=False)
    ds = VOCDataset(roots=[root], splits=["train"], skip_bad_images=True, log_report=False)
    assert len(ds) == 1 and ds.report["bad_image_skipped"] == 1


def test_padded_jpeg_is_kept(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 9, 9)], "b": [("cat", 1, 1, 9, 9)]})
    path = root / "JPEGImages" / "b.jpg"
    path.write_bytes(path.read_bytes() + bytes(8192))  # zeros after the end-of-image marker
    ds = VOCDataset(roots=[root], splits=["train"], log_report=False)
    assert len(ds) == 2 and ds.report["bad_image_skipped"] == 0
    assert ds[1]["image"].shape[:2] == (40, 60)


def test_unparsable_xml_names_file_and_parser_message(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 9, 9)]})
    (root / "Annotations" / "a.xml").write_text("<annotation><object><name>cat</name></annotation>")
    with pytest.raises(DataError, match=r"a\.xml.*not valid XML: mismatched tag"):
        VOCDataset(roots=[root], splits=["train"], log_report=False)


def test_non_numeric_coordinate(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, "abc", 9, 9)]})
    with pytest.raises(DataError, match=r"a\.xml.*<ymin> = 'abc'"):
        VOCDataset(roots=[root], splits=["train"], log_report=False)


def test_unknown_class_raises_or_is_dropped(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 9, 9), ("zebra", 2, 2, 8, 8)]})
    with pytest.raises(DataError, match=r"'zebra'.*\['cat', 'dog'\]"):
        VOCDataset(roots=[root], splits=["train"], classes=["cat", "dog"], log_report=False)
    ds = VOCDataset(roots=[root], splits=["train"], classes=["cat", "dog"], ignore_unknown_classes=True,
                    log_report=False)
    assert ds.get_annotation(0)["labels"].tolist() == [1]
    assert ds.report["unknown_class_dropped"] == 1 and "zebra" in ds.report.summary()


@pytest.mark.parametrize("policy,boxes,ignored", [("ignore", 1, 1), ("train", 2, 0), ("drop", 1, 0)])
def test_difficult_policy(tmp_path, policy, boxes, ignored):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 9, 9), ("dog", 11, 11, 19, 19, 1)]})
    ds = VOCDataset(roots=[root], splits=["train"], difficult=policy, log_report=False)
    ann = ds.get_annotation(0)
    assert len(ann["boxes"]) == boxes and len(ann["ignore_boxes"]) == ignored
    if ignored:
        assert ann["ignore_boxes"].tolist() == [[10, 10, 19, 19]] and ann["ignore_labels"].tolist() == [2]
    assert ds.classes == ["cat", "dog"]  # a difficult-only class is still a class


def test_odd_file_names_sizes_and_image_kinds(tmp_path):
    root = tmp_path / "voc"
    write_voc(root, {"a": [("cat", 1, 1, 9, 9)]})
    # XML says b.png but the file is B.JPG; c is a grayscale PNG whose XML has the wrong <size>
    write_image(root / "JPEGImages" / "B.JPG", (40, 60))
    (root / "Annotations" / "B.xml").write_text(voc_xml("b.png", (60, 40), [("cat", 1, 1, 9, 9)]))
    from PIL import Image
    Image.fromarray(np.full((30, 50), 128, np.uint8)).save(root / "JPEGImages" / "c.png")
    (root / "Annotations" / "c.xml").write_text(voc_xml("c.png", (60, 40), [("cat", 1, 1, 70, 9)]))
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nB\nc\n")
    ds = VOCDataset(roots=[root], splits=["train"], log_report=False)
    assert len(ds) == 3
    assert ds.report["filename_mismatch"] == 1 and ds.report["size_mismatch"] == 1
    assert ds.image_sizes[2] == (30, 50)
    assert ds.get_annotation(2)["boxes"].tolist() == [[0, 0, 50, 9]]  # clipped to the real size
    assert ds[2]["image"].shape == (30, 50, 3) and ds[1]["image"].shape == (40, 60, 3)


def test_several_roots_and_per_root_splits(tmp_path):
    r1 = write_voc(tmp_path / "VOC2007", {"x1": [("cat", 1, 1, 9, 9)], "x2": [("dog", 1, 1, 9, 9)]}, split="trainval")
    r2 = write_voc(tmp_path / "VOC2012", {"y1": [("bird", 1, 1, 9, 9)]}, split="train")
    ds = VOCDataset(roots=[r1, r2], splits=["trainval", "train"], log_report=False)
    assert [ds.get_annotation(i)["file_name"] for i in range(3)] == ["x1.jpg", "x2.jpg", "y1.jpg"]
    assert ds.classes == ["bird", "cat", "dog"]
    assert [ds.get_annotation(i)["image_id"] for i in range(3)] == [1, 2, 3]


def test_any_folder_layout_with_and_without_split_file(tmp_path):
    root = tmp_path / "labels"
    for k, name in enumerate(["p", "q", "r"]):
        write_image(root / "images" / f"{name}.png", (40, 60), seed=k)
        (root / "xml").mkdir(parents=True, exist_ok=True)
        (root / "xml" / f"{name}.xml").write_text(voc_xml(None, None, [("cat", 1, 1, 9 + k, 9)]))
    all_ds = VOCDataset(roots=[root], ann_dir="xml", img_dir="images", log_report=False)
    assert len(all_ds) == 3 and all_ds[0]["image"].shape == (40, 60, 3)
    (root / "some.txt").write_text("r\np\n")
    part = VOCDataset(roots=[root], ann_dir="xml", img_dir="images", split_file="some.txt", log_report=False)
    assert [part.get_annotation(i)["file_name"] for i in range(2)] == ["r.png", "p.png"]


def test_missing_split_file_and_root(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 9, 9)]})
    with pytest.raises(DataError, match="val.txt"):
        VOCDataset(roots=[root], splits=["val"], log_report=False)
    with pytest.raises(DataError, match="nowhere"):
        VOCDataset(roots=[tmp_path / "nowhere"], splits=["train"], log_report=False)


def _three_broken_annotations(tmp_path):
    """A VOC root with one good file and three broken ones, each broken in its own way."""
    items = {"good": [("cat", 1, 1, 9, 9)], "cut": [("cat", 1, 1, 9, 9)], "nocoord": [("cat", 1, 1, 9, 9)],
             "empty": [("cat", 1, 1, 9, 9)]}
    root = write_voc(tmp_path / "voc", items)
    ann = root / "Annotations"
    text = (ann / "cut.xml").read_text()
    (ann / "cut.xml").write_text(text[: text.index("<bndbox>") + 12])  # cut off mid-element
    (ann / "nocoord.xml").write_text((ann / "nocoord.xml").read_text().replace("<ymax>9</ymax>", ""))
    (ann / "empty.xml").write_text("")
    return root


def test_every_broken_annotation_is_listed_in_one_pass(tmp_path):
    root = _three_broken_annotations(tmp_path)
    with pytest.raises(DataError) as info:
        VOCDataset(roots=[root], splits=["train"], log_report=False)
    message = str(info.value)
    assert message.startswith("3 of 4 annotation files") and "data.skip_bad_annotations" in message
    assert "'" + str(root / "Annotations" / "cut.xml") + "' is not valid XML" in message
    assert "nocoord.xml" in message and "<ymax>" in message
    assert "empty.xml" in message and "no element found" in message  # the parser's own words
    assert "good.xml" not in message
    ds = VOCDataset(roots=[root], splits=["train"], skip_bad_annotations=True, log_report=False)
    assert len(ds) == 1 and ds.report["bad_annotation_skipped"] == 3
    assert len(ds.bad_annotations) == 3


def test_broken_annotations_through_the_config_and_class_discovery(tmp_path):
    root = _three_broken_annotations(tmp_path)
    split = {"roots": [str(root)], "splits": ["train"]}
    cfg = config_from_dict({"data": {"format": "voc", "train": split, "val": split}})
    with pytest.raises(DataError, match="^3 of 4"):
        build_dataset(cfg, "val")  # class discovery on train skips them; the data set lists them
    cfg.data.skip_bad_annotations = True
    assert build_dataset(cfg, "val").classes == ["cat"]
