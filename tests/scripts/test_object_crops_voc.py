"""scripts/object_crops_voc.py: each crop is a window around one object, the objects it holds read back
through detkit's VOC loader in the crop's coordinates, and partly visible ones become ignore regions."""

import numpy as np
import pytest
from PIL import Image

from detkit.data.voc import VOCDataset
from scripts import object_crops_voc
from tests.data.data_helpers import write_voc

W, H = 200, 100


def _write_source(root, objects_per_image, split):
    items = {image_id: [(name, *box) for name, box in objects] for image_id, objects in objects_per_image.items()}
    write_voc(root, items, split=split, image_size=(H, W))


def test_window_is_context_times_the_box_and_shifted_inside_the_image():
    assert object_crops_voc.crop_window((81, 31, 121, 61), 2.0, W, H) == (61, 16, 141, 76)
    # near the left edge: shifted right, same size
    assert object_crops_voc.crop_window((1, 31, 41, 61), 2.0, W, H) == (0, 16, 80, 76)
    # larger than the image: clipped to it
    assert object_crops_voc.crop_window((1, 1, 150, 90), 3.0, W, H) == (0, 0, W, H)


def test_crops_read_back_with_partly_visible_objects_ignored(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    # one 'cell' to crop around at the centre; a second 'cell' mostly outside its window; an 'other'
    # inside the window (not annotated); an image with no 'cell' (no crop)
    _write_source(src, {
        "a": [("cell", (81, 31, 121, 61)), ("cell", (131, 41, 171, 61)), ("other", (90, 40, 100, 50))],
        "b": [("other", (10, 10, 50, 50))],
    }, "train")
    assert object_crops_voc.main(["--root", str(src), "--out", str(out), "--around", "cell", "--classes", "cell",
                                  "--splits", "train", "--context", "2"]) == 0
    # both 'cell' objects are centres of a crop; 'b' has none
    names = (out / "ImageSets" / "Main" / "train.txt").read_text().split()
    assert names == ["train_a_crop00000", "train_a_crop00001"]
    assert Image.open(out / "JPEGImages" / f"{names[0]}.jpg").size == (80, 60)
    data = VOCDataset(roots=[str(out)], splits=["train"], classes=["cell"], log_report=False)
    ann = data.get_annotation(0)
    # window (61, 16, 141, 76): the centred cell at (20, 15)-(60, 45) in 1-based pixels, read 0-based;
    # the second cell keeps 10 of its 40 columns (a quarter of its area), so it is an ignore region
    np.testing.assert_allclose(ann["boxes"].tolist(), [[19, 14, 60, 45]], atol=0.05)
    np.testing.assert_allclose(ann["ignore_boxes"].tolist(), [[69, 24, 80, 45]], atol=0.05)


def test_a_split_without_the_class_is_a_clear_error(tmp_path):
    src = tmp_path / "src"
    _write_source(src, {"b": [("other", (10, 10, 50, 50))]}, "val")
    with pytest.raises(ValueError, match="no object of class 'cell'"):
        object_crops_voc.make_split(str(src), str(tmp_path / "out"), "val", "cell", ["cell"], 2.0, 0.5, 0, 0)


def test_max_images_caps_a_split_by_a_seeded_choice(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _write_source(src, {f"i{k}": [("cell", (20 + k, 20, 60 + k, 60))] for k in range(6)}, "train")
    args = ["--root", str(src), "--out", str(out), "--around", "cell", "--classes", "cell", "--splits", "train",
            "--max-images", "3"]
    assert object_crops_voc.main(args) == 0
    first = (out / "ImageSets" / "Main" / "train.txt").read_text().split()
    assert len(first) == 3
    assert object_crops_voc.main(args) == 0
    assert (out / "ImageSets" / "Main" / "train.txt").read_text().split() == first
