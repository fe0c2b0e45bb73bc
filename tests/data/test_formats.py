"""detkit/data/formats.py: the format table behind build_dataset (VOC, YOLO and auto split have their own tests)."""

from __future__ import annotations

import pytest
from data_helpers import tiny_synthetic_config, write_coco, write_image

from detkit.config import config_from_dict
from detkit.data.formats import build_dataset
from detkit.errors import ConfigError


def test_coco_config_paths_relative_to_root(tmp_path):
    write_image(tmp_path / "coco" / "imgs" / "a.jpg", (30, 40))
    write_coco(tmp_path / "coco" / "ann.json", [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
               [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4], "iscrowd": 0}],
               [{"id": 5, "name": "thing"}])
    split = {"roots": [str(tmp_path / "coco")], "ann_file": "ann.json", "img_dir": "imgs"}
    cfg = config_from_dict({"data": {"format": "coco", "train": split, "val": split}})
    ds = build_dataset(cfg, "train")
    assert ds.classes == ["thing"] and ds.get_annotation(0)["boxes"].tolist() == [[1, 2, 4, 6]]


def test_unknown_split_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'test' is not valid"):
        build_dataset(tiny_synthetic_config(tmp_path / "cache"), "test")
