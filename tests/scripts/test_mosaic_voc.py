"""scripts/mosaic_voc.py: the derived 2x2-mosaic VOC set reads back through detkit's VOC loader with
every kept box moved to its tile, the other classes dropped, and each source image used --uses times."""

import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from detkit.data.voc import VOCDataset
from scripts import mosaic_voc

W, H = 64, 48


def _write_source(root, ids, split):
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k, image_id in enumerate(ids):
        # one flat colour per image, so that a tile's source can be read back from the mosaic's pixels
        Image.new("RGB", (W, H), (40 * k % 256, 100, 200)).save(root / "JPEGImages" / f"{image_id}.jpg", quality=100)
        ann = ET.Element("annotation")
        size = ET.SubElement(ann, "size")
        for key, value in (("width", W), ("height", H), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        # a kept box, a box of a dropped class, and a kept box reaching outside the image (clipped)
        for name, box in (("cell", (10 + k, 5, 30 + k, 25)), ("other", (1, 1, 9, 9)), ("cell", (50, 30, 70, 60))):
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = name
            bnd = ET.SubElement(obj, "bndbox")
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
                ET.SubElement(bnd, key).text = str(value)
        ET.ElementTree(ann).write(root / "Annotations" / f"{image_id}.xml")
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def test_groups_use_each_image_as_often_as_asked():
    groups = mosaic_voc.mosaic_groups(10, 2, seed=0)
    assert len(groups) == 5 and all(len(g) == 4 for g in groups)
    assert Counter(i for g in groups for i in g) == Counter({i: 2 for i in range(10)})
    assert mosaic_voc.mosaic_groups(10, 2, seed=0) == groups


def test_mosaic_boxes_land_on_their_tiles_and_read_back(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    ids = [f"img{k}" for k in range(8)]
    _write_source(src, ids, "train")
    assert mosaic_voc.main(["--root", str(src), "--out", str(out), "--classes", "cell", "--splits", "train",
                            "--uses", "1"]) == 0
    groups = mosaic_voc.mosaic_groups(len(ids), 1, seed=0)
    data = VOCDataset(roots=[str(out)], splits=["train"], classes=["cell"], log_report=False)
    assert len(data) == 2
    for g, group in enumerate(groups):
        mosaic = np.asarray(Image.open(out / "JPEGImages" / f"train_mosaic_{g:05d}.jpg"))
        assert mosaic.shape == (2 * H, 2 * W, 3)
        expected = []
        for q, index in enumerate(group):
            ox, oy = (q % 2) * W, (q // 2) * H
            assert abs(int(mosaic[oy + H // 2, ox + W // 2, 0]) - 40 * index % 256) <= 3  # the right tile
            # detkit reads VOC's 1-based (xmin, ymin) as (xmin - 1, ymin - 1); the second box is clipped
            expected += [[9 + index + ox, 4 + oy, 30 + index + ox, 25 + oy], [49 + ox, 29 + oy, W + ox, H + oy]]
        ann = data.get_annotation(g)
        assert ann["orig_size"] == (2 * H, 2 * W) and set(ann["labels"].tolist()) == {1}
        np.testing.assert_allclose(sorted(ann["boxes"].tolist()), sorted(expected), atol=0.05)


def test_too_few_images_is_a_clear_error(tmp_path):
    src = tmp_path / "src"
    _write_source(src, ["a", "b"], "val")
    with pytest.raises(ValueError, match="too few"):
        mosaic_voc.make_split(str(src), str(tmp_path / "out"), "val", ["cell"], 1, 0)
