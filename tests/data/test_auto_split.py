"""data.auto_split: a deterministic, stratified train / val split of a data set that has none."""

import json

import numpy as np
import pytest

from detkit.config import load_config
from detkit.data.auto_split import split_from_file, stratified_split
from detkit.data.formats import build_dataset
from detkit.errors import ConfigError
from tests.data.test_yolo import _yolo_set


def _labels(seed, n=60, k=5):
    rng = np.random.default_rng(seed)
    out = [rng.integers(0, 3, rng.integers(0, 4)) for _ in range(n)]  # common classes 0..2, some negatives
    out[7] = np.array([3])
    out[30] = np.array([3, 0])  # class 3: two images
    out[12] = np.array([4])     # class 4: one image
    return out


def test_split_is_deterministic_sized_and_disjoint():
    labels = _labels(0)
    a = stratified_split(labels, 0.2, seed=1)
    assert a == stratified_split(labels, 0.2, seed=1)
    assert a != stratified_split(labels, 0.2, seed=2)
    train, val = a
    assert len(val) == 12 and sorted(train + val) == list(range(60))


def test_every_class_with_two_images_is_on_both_sides():
    for seed in range(20):
        labels = _labels(seed)
        train, val = stratified_split(labels, 0.1, seed=seed)
        for cls in range(4):  # class 4 has a single image and can only be on one side
            assert any(cls in labels[i] for i in train) and any(cls in labels[i] for i in val), (seed, cls)


def test_too_few_images():
    with pytest.raises(ConfigError, match="at least 2 images"):
        stratified_split([np.array([0])], 0.5, seed=0)
    assert stratified_split([np.array([0]), np.array([0])], 0.01, seed=0)[1]  # at least one val image


def _cfg(root, *extra):
    return load_config(None, ["data.format=yolo", f"data.train.roots=[{root}]", "data.train.splits=[]",
                              "data.classes=[light, dark]", *extra])


def test_build_dataset_gives_the_two_sides_of_one_source(tmp_path):
    root = tmp_path / "yolo"
    _yolo_set(root, 20, "all", 0)
    cfg = _cfg(root, "data.auto_split.val_fraction=0.25", "data.auto_split.seed=3")
    train, val = build_dataset(cfg, "train", log_report=False), build_dataset(cfg, "val", log_report=False)
    assert len(train) == 15 and len(val) == 5
    names_t, names_v = {r.file_name for r in train.records}, {r.file_name for r in val.records}
    assert not names_t & names_v and len(names_t | names_v) == 20
    ids = [r.image_id for r in train.records + val.records]
    assert len(set(ids)) == 20  # image ids stay unique across the sides


def test_a_split_alongside_data_val_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="data.auto_split"):
        load_config(None, ["data.format=yolo", "data.train.roots=[a]", "data.val.roots=[b]",
                           "data.auto_split.val_fraction=0.2"])
    with pytest.raises(ConfigError, match="val_fraction"):
        load_config(None, ["data.auto_split.val_fraction=0"])


def test_training_writes_the_split_and_reuses_it(tmp_path):
    from detkit.engine.trainer import Trainer
    from tests.engine.conftest import tiny_overrides

    root = tmp_path / "yolo"
    _yolo_set(root, 12, "all", 0)
    overrides = [o for o in tiny_overrides(tmp_path, **{"train.max_iters": 1}) if not o.startswith("data.")
                 or o.startswith(("data.min_size", "data.max_size"))]
    cfg = load_config(None, overrides + ["data.format=yolo", f"data.train.roots=[{root}]", "data.classes=[light, dark]",
                                         "data.auto_split.val_fraction=0.25"])
    Trainer(cfg, quiet=True, log=lambda *_: None).run()
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["num_train"] == 9 and split["num_val"] == 3 and split["val_fraction"] == 0.25
    saved = load_config(str(tmp_path / "run" / "config.yaml"))
    assert saved.data.auto_split.file == str(tmp_path / "run" / "split.json")
    val = build_dataset(saved, "val", log_report=False)  # what eval.py on the checkpoint evaluates
    assert sorted(r.file_name for r in val.records) == sorted(split["val"])
    # The file wins over the fraction, and a file that does not match the images is an error.
    (tmp_path / "other.json").write_text(json.dumps({"train": split["train"][1:], "val": split["val"] + ["x.png"]}))
    whole = build_dataset(_cfg(root), "train", log_report=False)
    with pytest.raises(ConfigError, match="1 of its images are not in the file.*1 listed images"):
        split_from_file(whole, str(tmp_path / "other.json"))
