"""detkit/data/dataset.py: what probe_image counts of an image's EXIF orientation in every format (an
invalid tag is ignored and reported as such, never as a rotation), and the advice a data set adds to an
image that cannot be decoded."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from data_helpers import voc_xml, write_coco
from PIL import Image

from detkit.data.coco import COCODataset
from detkit.data.report import FIX_DESCRIPTIONS
from detkit.data.voc import VOCDataset
from detkit.data.yolo import YOLODataset
from detkit.errors import DataError

H, W = 20, 30  # the stored size of every image here


def _long_orientation_exif(value: int) -> bytes:
    """An EXIF block holding the orientation as a LONG (as the held-out file did: 65537 fits no SHORT)."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHLL", 0x0112, 4, 1, value) + b"\0\0\0\0"
    return b"Exif\0\0" + b"II*\0" + struct.pack("<L", 8) + ifd


def _short_orientation_exif(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


# file name -> EXIF block (None: none); the report: two invalid tags (one the JPEG header shortcut reads,
# one only Pillow does), one in a PNG, one rotation, one upright
IMAGES = {
    "long65537.jpg": _long_orientation_exif(65537),
    "short0.jpg": _short_orientation_exif(0),
    "long9.png": _long_orientation_exif(9),
    "rotated6.jpg": _short_orientation_exif(6),
    "upright.jpg": None,
}


def _write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    for name, exif in IMAGES.items():
        Image.fromarray(pixels).save(folder / name, **({} if exif is None else {"exif": exif}))


def _check_report_and_samples(ds) -> None:
    report = ds.report
    assert report["exif_invalid_ignored"] == 3 and report["exif_rotated"] == 1
    examples = " ".join(report.examples["exif_invalid_ignored"])
    for name, value in (("long65537.jpg", 65537), ("short0.jpg", 0), ("long9.png", 9)):
        assert f"{name} (orientation tag {value})" in examples
    assert "rotated6.jpg (orientation 6)" in report.examples["exif_rotated"][0]
    summary = report.summary()
    assert FIX_DESCRIPTIONS["exif_invalid_ignored"] in summary and FIX_DESCRIPTIONS["exif_rotated"] in summary
    for i in range(len(ds)):  # every sample decodes to the size its boxes were placed in
        sample = ds[i]
        rotated = sample["file_name"].endswith("rotated6.jpg")
        assert sample["orig_size"] == ((W, H) if rotated else (H, W))
        assert sample["image"].shape[:2] == sample["orig_size"]


def test_invalid_orientations_reported_as_ignored_yolo(tmp_path):
    _write_images(tmp_path)
    for name in IMAGES:
        (tmp_path / name).with_suffix(".txt").write_text("0 0.5 0.5 0.5 0.5\n")
    ds = YOLODataset(roots=[tmp_path], classes=["a"], log_report=False)
    assert len(ds) == len(IMAGES)
    _check_report_and_samples(ds)


def test_invalid_orientations_reported_as_ignored_voc(tmp_path):
    _write_images(tmp_path / "JPEGImages")
    (tmp_path / "Annotations").mkdir()
    for name in IMAGES:
        size = (H, W) if name.startswith("rotated") else (W, H)  # <size> is (w, h) in the displayed frame
        (tmp_path / "Annotations" / f"{Path(name).stem}.xml").write_text(voc_xml(name, size, [("a", 2, 2, 9, 9)]))
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("\n".join(Path(n).stem for n in IMAGES) + "\n")
    ds = VOCDataset(roots=[tmp_path], splits=["train"], log_report=False)
    assert ds.report["size_mismatch"] == 0
    _check_report_and_samples(ds)


def test_invalid_orientations_reported_as_ignored_coco_and_from_the_header_cache(tmp_path):
    _write_images(tmp_path / "img")
    images = [{"id": k + 1, "file_name": name, "width": H if name.startswith("rotated") else W,
               "height": W if name.startswith("rotated") else H} for k, name in enumerate(IMAGES)]
    annotations = [{"id": k + 1, "image_id": k + 1, "category_id": 1, "bbox": [2, 2, 5, 5], "iscrowd": 0,
                    "area": 25.0} for k in range(len(IMAGES))]
    ann_file = write_coco(tmp_path / "ann.json", images, annotations, [{"id": 1, "name": "a"}])
    for _ in range(2):  # headers read, then headers from the cache: the same report
        ds = COCODataset(ann_file=ann_file, img_dir=tmp_path / "img", log_report=False, index_cache=True,
                         cache_dir=str(tmp_path / "cache"))
        assert ds.report["size_mismatch"] == 0
        _check_report_and_samples(ds)
    assert list(tmp_path.glob(".ann.json.detkit-index.npz"))


def test_undecodable_image_advice_in_a_data_set(tmp_path):
    """An image whose header and end marker are fine but whose data does not decode passes every check
    made when the data set is read, with or without data.skip_bad_images: decoding it in training says
    what to do, and not to set a setting that cannot skip it."""
    _write_images(tmp_path)
    path = tmp_path / "upright.jpg"
    data = bytearray(path.read_bytes())
    at = data.index(b"\xff\xc4")  # the first Huffman table: code counts far beyond 256 symbols
    data[at + 5:at + 21] = b"\xff" * 16
    path.write_bytes(bytes(data))
    for name in IMAGES:
        (tmp_path / name).with_suffix(".txt").write_text("0 0.5 0.5 0.5 0.5\n")
    ds = YOLODataset(roots=[tmp_path], classes=["a"], skip_bad_images=True, log_report=False)
    assert len(ds) == len(IMAGES) and ds.report["bad_image_skipped"] == 0
    k = [ds.image_path(i) for i in range(len(ds))].index(str(path))
    with pytest.raises(DataError) as info:
        ds[k]
    message = str(info.value)
    assert message.startswith(f"image file '{path}' cannot be decoded (")
    assert "fix or remove it" in message and "detkit lint" in message
