"""Class-aware weight transfer (detkit/weights/transfer.py): what is copied, per class, and what is reported."""

import json

import pytest
import torch

from detkit.config import load_config
from detkit.errors import CheckpointError, ConfigError
from detkit.modeling.detector import build_detector
from detkit.weights.transfer import PREDICTOR_KEYS, transfer_weights, write_transfer_report

CLS_W, CLS_B = "roi_head.predictor.cls_score.weight", "roi_head.predictor.cls_score.bias"
BOX_W, BOX_B = "roi_head.predictor.bbox_pred.weight", "roi_head.predictor.bbox_pred.bias"

TINY = {"model.backbone.features": "c5", "model.backbone.fpn_channels": 32, "model.anchors.sizes": [[16.0, 32.0]],
        "model.anchors.ratios": [1.0], "model.roi_head.fc_dim": 32}


def make(num_classes, seed=0, **extra):
    """A tiny detector with ``num_classes`` classes, its weights drawn from ``seed``."""
    values = {**TINY, **extra}
    cfg = load_config(None, [f"{k}={v}" for k, v in values.items()])
    torch.manual_seed(seed)
    return build_detector(cfg, num_classes, log=lambda *_: None)


def randomised(model, seed):
    """The model's state with every float tensor redrawn, so that copies are told apart from the init."""
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone())
            for k, v in model.state_dict().items()}


def test_matching_names_copy_their_rows_exactly_and_new_classes_keep_their_init():
    source = randomised(make(3), seed=1)  # person, dog, cat
    model = make(3, seed=2)  # dog, raccoon, person
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = transfer_weights(model, source, source_classes=["person", "dog", "cat"],
                              target_classes=[" Dog", "raccoon", "PERSON "], source="src.pt")
    after = model.state_dict()
    # data label -> weights label (1-based): dog 1 <- 2, person 3 <- 1; raccoon 2 new
    for key in (CLS_W, CLS_B):
        assert torch.equal(after[key][0], source[key][0])  # background
        assert torch.equal(after[key][1], source[key][2])
        assert torch.equal(after[key][3], source[key][1])
        assert torch.equal(after[key][2], before[key][2])
    for key in (BOX_W, BOX_B):
        assert torch.equal(after[key][0:4], source[key][4:8])
        assert torch.equal(after[key][8:12], source[key][0:4])
        assert torch.equal(after[key][4:8], before[key][4:8])
    for key in after:
        if key not in PREDICTOR_KEYS and after[key].is_floating_point():
            assert torch.equal(after[key], source[key]), key
    assert report.classes_matched == {" Dog": "dog", "PERSON ": "person"}
    assert report.classes_new == ["raccoon"]
    assert len(report.transferred) == report.total and not report.fresh and not report.missing
    assert report.summary() == (f"transferred {report.total}/{report.total} tensors from src.pt; classes from "
                                f"the checkpoint:  Dog (as dog), PERSON  (as person); new: raccoon")


def test_class_map_synonyms_are_applied_first():
    source = randomised(make(2), seed=1)
    model = make(2, seed=2)
    report = transfer_weights(model, source, source_classes=["person", "motorcycle"],
                              target_classes=["motorbike", "person"], class_map={"Motorbike": "motorcycle"})
    after = model.state_dict()
    assert torch.equal(after[CLS_W][1], source[CLS_W][2]) and torch.equal(after[CLS_W][2], source[CLS_W][1])
    assert torch.equal(after[BOX_W][0:4], source[BOX_W][4:8])
    assert report.classes_matched == {"motorbike": "motorcycle", "person": "person"} and not report.classes_new
    assert "motorbike (as motorcycle)" in report.summary()
    assert any("class_map" in line for line in report.details())


def test_a_class_map_entry_that_names_nothing_is_an_error():
    source = randomised(make(2), seed=1)
    with pytest.raises(ConfigError, match=r"model.class_map.*'motorbike: motocycle'.*no class of the weights"):
        transfer_weights(make(1), source, source_classes=["person", "motorcycle"], target_classes=["motorbike"],
                         class_map={"motorbike": "motocycle"})
    with pytest.raises(ConfigError, match=r"model.class_map.*'bike' is no class of the data"):
        transfer_weights(make(1), source, source_classes=["person", "motorcycle"], target_classes=["motorbike"],
                         class_map={"bike": "motorcycle"})


def test_no_matching_names_transfer_the_background_row_only():
    source = randomised(make(2), seed=1)
    model = make(3, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = transfer_weights(model, source, source_classes=["person", "dog"], target_classes=["a", "b", "c"])
    after = model.state_dict()
    assert torch.equal(after[CLS_W][0], source[CLS_W][0])
    assert torch.equal(after[CLS_W][1:], before[CLS_W][1:])
    assert torch.equal(after[BOX_W], before[BOX_W])
    assert report.classes_new == ["a", "b", "c"] and not report.classes_matched
    assert "classes from the checkpoint: none; new: a, b, c" in report.summary()
    assert BOX_W not in report.transferred and CLS_W in report.transferred  # the background row


def test_unnamed_source_classes_match_by_position_only_when_the_counts_agree():
    source = randomised(make(2), seed=1)
    model = make(2, seed=2)
    report = transfer_weights(model, source, source_classes=None, target_classes=["a", "b"])
    assert torch.equal(model.state_dict()[CLS_W], source[CLS_W])
    assert torch.equal(model.state_dict()[BOX_W], source[BOX_W])
    assert report.class_matching == "position" and "by position" in report.summary()

    model = make(3, seed=2)
    before = model.state_dict()[BOX_W].clone()
    report = transfer_weights(model, source, source_classes=None, target_classes=["a", "b", "c"])
    assert torch.equal(model.state_dict()[BOX_W], before)
    assert report.class_matching == "none" and "no class rows transferred" in report.summary()
    assert any("name no classes" in line for line in report.details())


def test_class_agnostic_box_predictor():
    source = randomised(make(2, **{"model.roi_head.class_agnostic": True}), seed=1)
    model = make(3, seed=2, **{"model.roi_head.class_agnostic": True})
    report = transfer_weights(model, source, source_classes=["a", "b"], target_classes=["b", "x", "y"])
    after = model.state_dict()
    assert after[BOX_W].shape[0] == 4 and torch.equal(after[BOX_W], source[BOX_W])
    assert torch.equal(after[CLS_W][1], source[CLS_W][2])
    assert not report.fresh

    # per-class box deltas have no class-agnostic counterpart: they start fresh, reported
    specific = randomised(make(2), seed=3)
    model = make(3, seed=2, **{"model.roi_head.class_agnostic": True})
    before = model.state_dict()[BOX_W].clone()
    report = transfer_weights(model, specific, source_classes=["a", "b"], target_classes=["b", "x", "y"])
    assert torch.equal(model.state_dict()[BOX_W], before)
    assert [name for name, _, _ in report.fresh] == [BOX_W, BOX_B]


def test_a_backbone_tensor_of_another_shape_is_an_error_naming_both_shapes():
    fpn = {"model.backbone.features": "fpn", "model.anchors.sizes": [[16.0], [32.0], [64.0], [128.0], [256.0]]}
    source = randomised(make(2, **fpn, **{"model.backbone.fpn_channels": 64}), seed=1)
    with pytest.raises(CheckpointError, match=r"x.pt: \d+ backbone tensor\(s\) of another shape: backbone\.fpn\.\S+: "
                                              r"\(64, 64, 1, 1\) in the weights vs \(32, 64, 1, 1\) in the model"):
        transfer_weights(make(2, **fpn), source, source_classes=["a", "b"], target_classes=["a", "b"], source="x.pt")


def test_a_head_tensor_of_another_shape_starts_fresh_and_is_reported():
    source = randomised(make(2, **{"model.roi_head.fc_dim": 64, "model.anchors.sizes": [[16.0, 32.0, 64.0]]}),
                        seed=1)
    model = make(2, seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = transfer_weights(model, source, source_classes=["a", "b"], target_classes=["a", "b"], source="x.pt")
    fresh = {name: (a, b) for name, a, b in report.fresh}
    assert fresh["roi_head.box_head.fcs.1.weight"] == ([64, 64], [32, 32])
    assert fresh["rpn.head.cls_logits.weight"] == ([3, 512, 1, 1], [2, 512, 1, 1])
    assert set(PREDICTOR_KEYS) - {CLS_B, BOX_B} <= set(fresh)  # another feature size: no rows to copy
    after = model.state_dict()
    for name in fresh:
        assert torch.equal(after[name], before[name]), name
    assert torch.equal(after["rpn.head.conv.weight"], source["rpn.head.conv.weight"])
    assert report.summary().startswith(f"transferred {report.total - len(fresh)}/{report.total} tensors from x.pt")
    assert any(line.startswith(f"  another shape, started fresh [{len(fresh)}]") and "and " in line
               for line in report.details())


def test_missing_and_unexpected_tensors_are_listed():
    source = randomised(make(2), seed=1)
    del source["rpn.head.conv.weight"]
    source["extra.weight"] = torch.zeros(3)
    model = make(2, seed=2)
    report = transfer_weights(model, source, source_classes=["a", "b"], target_classes=["a", "b"])
    assert report.missing == ["rpn.head.conv.weight"] and report.unexpected == ["extra.weight"]
    assert "  missing in the weights, kept at init [1]: rpn.head.conv.weight" in report.details()
    assert "  unexpected in the weights, ignored [1]: extra.weight" in report.details()


def test_batch_norm_counters_are_neither_missing_nor_unexpected():
    source = randomised(make(2), seed=1)  # bn: has num_batches_tracked
    model = make(2, seed=2, **{"model.backbone.norm": "frozen_bn"})
    report = transfer_weights(model, source, source_classes=["a", "b"], target_classes=["a", "b"])
    assert not report.unexpected and not report.missing
    assert torch.equal(model.state_dict()["backbone.body.bn1.running_var"], source["backbone.body.bn1.running_var"])


def test_the_report_is_written_as_json(tmp_path):
    source = randomised(make(2), seed=1)
    report = transfer_weights(make(3), source, source_classes=["a", "b"], target_classes=["b", "c", "a"])
    write_transfer_report(report, str(tmp_path / "transfer.json"))
    data = json.loads((tmp_path / "transfer.json").read_text())
    assert data["summary"] == report.summary()
    assert data["classes_matched"] == {"b": "b", "a": "a"} and data["classes_new"] == ["c"]
    assert data["counts"]["total"] == report.total and data["counts"]["transferred"] == report.total


def test_cascade_stage_predictors_transfer_their_class_rows_by_name():
    cascade = {"model.roi_head.cascade": [0.5, 0.6]}
    source = randomised(make(3, **cascade), seed=1)  # person, dog, cat
    model = make(3, seed=2, **cascade)  # dog, raccoon, person
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = transfer_weights(model, source, source_classes=["person", "dog", "cat"],
                              target_classes=["dog", "raccoon", "person"], source="src.pt")
    after = model.state_dict()
    stage_cls = [k for k in after if k.startswith("roi_head.stages.") and ".predictor.cls_score." in k]
    assert len(stage_cls) == 4  # weight and bias of two stages
    for key in stage_cls:
        assert torch.equal(after[key][0], source[key][0])  # background
        assert torch.equal(after[key][1], source[key][2]) and torch.equal(after[key][3], source[key][1])
        assert torch.equal(after[key][2], before[key][2])  # raccoon: new
    for key in (k for k in after if ".predictor.bbox_pred." in k):  # class-agnostic deltas: copied whole
        assert torch.equal(after[key], source[key]), key
    assert report.classes_new == ["raccoon"] and not report.missing
