"""Tests of detkit/config.py: defaults, strict loading, overrides, validation, round trip."""

import math
from pathlib import Path

import pytest
import yaml

from detkit.config import Config, ConfigError, config_to_dict, load_config, read_config_file, save_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def write_yaml(tmp_path, data, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_follow_torchvision_faster_rcnn():
    cfg = load_config(None)
    rpn, roi = cfg.model.rpn, cfg.model.roi_head
    assert (rpn.fg_iou_thresh, rpn.bg_iou_thresh, rpn.allow_low_quality_matches) == (0.7, 0.3, True)
    assert (rpn.batch_size_per_image, rpn.positive_fraction) == (256, 0.5)
    assert (rpn.pre_nms_top_n_train, rpn.post_nms_top_n_train) == (2000, 2000)
    assert (rpn.pre_nms_top_n_test, rpn.post_nms_top_n_test) == (1000, 1000)
    assert rpn.nms_thresh == 0.7 and rpn.box_weights == [1.0, 1.0, 1.0, 1.0]
    assert (roi.fg_iou_thresh, roi.bg_iou_thresh) == (0.5, 0.5)
    assert (roi.batch_size_per_image, roi.positive_fraction) == (512, 0.25)
    assert roi.box_weights == [10.0, 10.0, 5.0, 5.0]
    assert math.isclose(roi.delta_clamp, math.log(1000 / 16))
    assert (roi.score_thresh, roi.nms_thresh, roi.detections_per_img) == (0.05, 0.5, 100)
    assert (roi.pool_size, roi.sampling_ratio, roi.num_fc, roi.fc_dim) == (7, 2, 2, 1024)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    out = tmp_path / "resolved.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg


def test_round_trip_keeps_nested_lists_and_nulls(tmp_path):
    shapes = [[[10.0, 20.0], [30.5, 15.25], [8.0, 8.0]]] * 5
    cfg = load_config(None, [f"model.anchors.shapes={shapes}", "data.classes=[a, b]", "train.grad_clip=null"])
    out = tmp_path / "c.yaml"
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert again.model.anchors.shapes == shapes
    assert config_to_dict(again) == config_to_dict(cfg)


@pytest.mark.parametrize("data, key, suggestion", [
    ({"train": {"lrr": 0.1}}, "train.lrr", "train.lr"),
    ({"model": {"rpn": {"fg_iou_thres": 0.6}}}, "model.rpn.fg_iou_thres", "model.rpn.fg_iou_thresh"),
    ({"model": {"backbone": {"dpeth": 50}}}, "model.backbone.dpeth", "model.backbone.depth"),
    ({"data": {"augment": {"hflip_prb": 0.5}}}, "data.augment.hflip_prb", "data.augment.hflip_prob"),
    ({"modle": {}}, "modle", "model"),
])
def test_unknown_key_in_file_names_key_and_nearest(tmp_path, data, key, suggestion):
    path = write_yaml(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"'{key}'" in message and f"'{suggestion}'" in message
    assert str(path) in message


@pytest.mark.parametrize("override, key, suggestion", [
    ("train.lrr=0.1", "train.lrr", "train.lr"),
    ("model.roi_head.fc_dims=512", "model.roi_head.fc_dims", "model.roi_head.fc_dim"),
    ("data.synthetic.num_trian=5", "data.synthetic.num_trian", "data.synthetic.num_train"),
])
def test_unknown_key_in_override(override, key, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert f"'{key}'" in str(info.value) and f"'{suggestion}'" in str(info.value)


def test_unknown_key_without_near_match_lists_valid_keys():
    with pytest.raises(ConfigError, match="valid keys of 'train'"):
        load_config(None, ["train.zzzzzzzz=1"])


@pytest.mark.parametrize("override, expected_type", [
    ("train.lr=fast", "float"),
    ("train.epochs=1.5", "int"),
    ("train.nesterov=1", "bool"),
    ("model.backbone.norm=3", "str"),
    ("data.min_size=800", "list of int"),
    ("model.anchors.ratios=[1, two]", "float"),
    ("model.rpn=3", "mapping"),
])
def test_wrong_type_names_key_type_and_value(override, expected_type):
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    message = str(info.value)
    assert key in message and expected_type in message


@pytest.mark.parametrize("override, key", [
    ("train.lr=0", "train.lr"),
    ("train.lr=-0.1", "train.lr"),
    ("model.rpn.fg_iou_thresh=1.5", "model.rpn.fg_iou_thresh"),
    ("model.roi_head.bg_iou_thresh=-0.1", "model.roi_head.bg_iou_thresh"),
    ("model.rpn.bg_iou_thresh=0.8", "model.rpn.bg_iou_thresh"),
    ("model.anchors.sizes=[[32], [0], [128], [256], [512]]", "model.anchors.sizes[1]"),
    ("model.anchors.sizes=[[32], [64, 80], [128], [256], [512]]", "model.anchors.sizes"),
    ("model.anchors.sizes=[[32], [64]]", "model.anchors.sizes"),
    ("model.anchors.ratios=[]", "model.anchors.ratios"),
    ("data.classes=[]", "data.classes"),
    ("data.classes=[a, a]", "data.classes"),
    ("model.backbone.depth=19", "model.backbone.depth"),
    ("model.anchors.mode=auto", "model.anchors.mode"),
    ("train.lr_steps=[0.9, 0.5]", "train.lr_steps"),
    ("train.batch_size=0", "train.batch_size"),
    ("model.rpn.box_weights=[1, 1, 1]", "model.rpn.box_weights"),
    ("train.device=tpu", "train.device"),
])
def test_out_of_range_values(override, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert key in str(info.value)


def test_choice_error_lists_valid_values():
    with pytest.raises(ConfigError, match="'manual', 'kmeans', 'learned'"):
        load_config(None, ["model.anchors.mode=auto"])


@pytest.mark.parametrize("override", ["train.lr", "=3", "train..lr=1", "", "train.lr.value=1"])
def test_malformed_override(override):
    with pytest.raises(ConfigError):
        load_config(None, [override])


@pytest.mark.parametrize("override, getter, expected", [
    ("train.epochs=3", lambda c: c.train.epochs, 3),
    ("train.lr=1e-3", lambda c: c.train.lr, 1e-3),
    ("train.lr=2", lambda c: c.train.lr, 2.0),
    ("train.nesterov=true", lambda c: c.train.nesterov, True),
    ("data.drop_empty=False", lambda c: c.data.drop_empty, False),
    ("model.backbone.weights=path/to/w.pth", lambda c: c.model.backbone.weights, "path/to/w.pth"),
    ("model.backbone.weights=null", lambda c: c.model.backbone.weights, None),
    ("train.grad_clip=~", lambda c: c.train.grad_clip, None),
    ("data.min_size=[480, 512, 544]", lambda c: c.data.min_size, [480, 512, 544]),
    ("model.anchors.ratios=[0.5, 1, 2.0]", lambda c: c.model.anchors.ratios, [0.5, 1.0, 2.0]),
    ("data.classes=[RBC, WBC]", lambda c: c.data.classes, ["RBC", "WBC"]),
    ("output.dir=runs/x=y", lambda c: c.output.dir, "runs/x=y"),
])
def test_override_parses_every_scalar_kind_and_lists(override, getter, expected):
    cfg = load_config(None, [override])
    value = getter(cfg)
    assert value == expected and type(value) is type(expected)


def test_override_beats_file_and_later_override_wins(tmp_path):
    path = write_yaml(tmp_path, {"train": {"lr": 0.5, "epochs": 2}})
    cfg = load_config(path, ["train.lr=0.1", "train.lr=0.05"])
    assert cfg.train.lr == 0.05 and cfg.train.epochs == 2


def test_override_creates_missing_section(tmp_path):
    path = write_yaml(tmp_path, {"train": {"epochs": 2}})
    cfg = load_config(path, ["model.rpn.nms_thresh=0.6"])
    assert cfg.model.rpn.nms_thresh == 0.6


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_read_config_file_returns_the_keys_as_written(tmp_path):
    path = write_yaml(tmp_path, {"train": {"epochs": 2}})
    assert read_config_file(path) == {"train": {"epochs": 2}}  # no defaults filled in
    assert read_config_file(write_yaml(tmp_path, None, name="empty.yaml")) == {}
    with pytest.raises(ConfigError, match="nope.yaml' does not exist"):
        read_config_file(tmp_path / "nope.yaml")


def test_empty_file_gives_defaults(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == Config()


def test_coco_and_voc_need_their_paths():
    with pytest.raises(ConfigError, match="data.train.ann_file"):
        load_config(None, ["data.format=coco"])
    with pytest.raises(ConfigError, match="data.train.roots"):
        load_config(None, ["data.format=voc"])


def test_single_level_backbone_needs_single_level_anchors():
    with pytest.raises(ConfigError, match="model.anchors.sizes"):
        load_config(None, ["model.backbone.features=c5"])
    cfg = load_config(None, ["model.backbone.features=c5", "model.anchors.sizes=[[32, 64, 128]]"])
    assert cfg.model.anchors.sizes == [[32.0, 64.0, 128.0]]


@pytest.mark.parametrize("overrides, match", [
    (["model.backbone.fpn_norm=true", "model.backbone.features=c5", "model.anchors.sizes=[[32]]"],
     r"model.backbone.fpn_norm' = true needs model.backbone.features = 'fpn', got 'c5'"),
    (["model.backbone.fpn_norm=true", "model.backbone.norm=frozen_bn"], r"trainable model.backbone.norm"),
    (["model.anchors.online_warmup=true"], r"online_warmup' = true refines learned anchors only.*got 'manual'"),
    (["model.roi_head.fc_norm=gn", "model.roi_head.fc_dim=100"], r"fc_norm' = gn .*multiple of 32 \(got 100\)"),
    (["model.roi_head.fc_norm=bn"], r"model.roi_head.fc_norm.*'none', 'ln', 'gn'|model.roi_head.fc_norm.*none.*ln.*gn"),
])
def test_impossible_combinations_name_their_keys(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)
    assert load_config(None, ["model.backbone.fpn_norm=true", "model.anchors.mode=learned",
                              "model.anchors.online_warmup=true"]).model.backbone.fpn_norm


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    cfg = load_config(None)
    out = tmp_path / "config.yaml"
    save_config(cfg, out)
    before = out.read_bytes()

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(yaml, "safe_dump", explode)
    with pytest.raises(RuntimeError):
        save_config(load_config(None, ["train.lr=0.5"]), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize("value, expected", [("false", False), ("true", True), ("bn", "bn"), ("sync_bn", "sync_bn"),
                                             ("gn", "gn")])
def test_fpn_norm_takes_a_bool_or_a_norm_name(value, expected, tmp_path):
    cfg = load_config(None, [f"model.backbone.fpn_norm={value}"])
    got = cfg.model.backbone.fpn_norm
    assert got == expected and type(got) is type(expected)
    save_config(cfg, tmp_path / "config.yaml")  # a saved config reads back the same value
    again = load_config(str(tmp_path / "config.yaml")).model.backbone.fpn_norm
    assert again == expected and type(again) is type(expected)


@pytest.mark.parametrize("overrides, match", [
    (["model.backbone.fpn_norm=frozen_bn"],
     r"'model.backbone.fpn_norm' = 'frozen_bn' is not valid; choose one of false, true, 'bn', 'sync_bn', 'gn'"),
    (["model.backbone.fpn_norm=1"], r"'model.backbone.fpn_norm' expects bool or str, got 1; choose one of false, true"),
    (["model.backbone.fpn_norm=null"], r"'model.backbone.fpn_norm' expects bool or str, got None"),
    (["model.backbone.fpn_norm=bn", "model.backbone.features=c4", "model.anchors.sizes=[[32]]"],
     r"'model.backbone.fpn_norm' = 'bn' needs model.backbone.features = 'fpn'"),
    (["model.backbone.fpn_norm=true", "model.backbone.norm=frozen_bn"], r"or name the FPN's own norm"),
    (["model.backbone.fpn_norm=gn", "model.backbone.fpn_channels=48"], r"fpn_channels must be a multiple of 32"),
    (["model.backbone.norm_eps=-1"], r"'model.backbone.norm_eps' = -1.0 must be >= 0"),
    (["model.rpn.head_convs=0"], r"'model.rpn.head_convs' = 0 must be >= 1"),
    (["model.roi_head.num_conv=-1"], r"'model.roi_head.num_conv' = -1 must be >= 0"),
    (["model.roi_head.conv_dim=0"], r"'model.roi_head.conv_dim' = 0 must be > 0"),
    (["model.roi_head.conv_norm=ln"], r"'model.roi_head.conv_norm' = 'ln' is not valid; choose one of 'none', 'bn'"),
    (["model.roi_head.num_conv=4", "model.roi_head.conv_norm=gn", "model.roi_head.conv_dim=48"],
     r"conv_dim must be a multiple of 32"),
])
def test_v2_architecture_keys_are_validated(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides)


def test_torchvision_v2_settings_load():
    cfg = load_config(None, ["model.backbone.depth=50", "model.backbone.norm=frozen_bn", "model.backbone.norm_eps=0",
                             "model.backbone.fpn_norm=bn", "model.rpn.head_convs=2", "model.roi_head.num_conv=4",
                             "model.roi_head.num_fc=1"])
    bb, h = cfg.model.backbone, cfg.model.roi_head
    assert (bb.fpn_norm, bb.norm_eps, cfg.model.rpn.head_convs) == ("bn", 0.0, 2)
    assert (h.num_conv, h.conv_dim, h.conv_norm, h.num_fc, h.fc_dim) == (4, 256, "bn", 1, 1024)
