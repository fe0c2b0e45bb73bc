"""model.weights (detkit/weights/start.py): reading a detkit checkpoint, a torchvision detection file or a
torchvision weights name; the fine-tuning defaults of the backbone (model.backbone.norm / freeze_at)."""

import pytest
import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from detkit.config import config_to_dict, load_config
from detkit.errors import CheckpointError
from detkit.modeling.detector import build_detector
from detkit.weights.start import apply_start_weights, frozen_layers_warning, read_start_weights

COCO_V1 = "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"
COCO_V1_FILE = "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth"
# A small FPN model that torchvision's FasterRCNN and detkit both build: ResNet-18, 32 FPN channels, FC 32.
FPN = {"model.backbone.fpn_channels": 32, "model.roi_head.fc_dim": 32,
       "model.anchors.sizes": [[32.0], [64.0], [128.0], [256.0], [512.0]]}


def config(**values):
    return load_config(None, [f"{k}={v}" for k, v in {**FPN, **values}.items()])


def torchvision_detector(num_classes):
    """torchvision's FasterRCNN over a ResNet-18 FPN of 32 channels (``num_classes`` with background)."""
    torch.manual_seed(0)
    backbone = BackboneWithFPN(torchvision.models.resnet18(), {f"layer{i}": str(i - 1) for i in range(1, 5)},
                               [64, 128, 256, 512], 32)
    return FasterRCNN(backbone, num_classes=None, box_head=TwoMLPHead(32 * 7 * 7, 32),
                      box_predictor=FastRCNNPredictor(32, num_classes))


def detkit_checkpoint(path, classes, **values):
    cfg = config(**values)
    model = build_detector(cfg, len(classes), log=lambda *_: None)
    torch.save({"model": model.state_dict(), "classes": classes, "config": config_to_dict(cfg),
                "anchor_shapes": [[[32.0, 32.0]]]}, path)
    return model


def test_a_detkit_checkpoint_gives_its_weights_classes_and_architecture(tmp_path):
    path = tmp_path / "run.pt"
    model = detkit_checkpoint(path, ["person", "dog"])
    start = read_start_weights(str(path), log=lambda *_: None)
    assert start.classes == ["person", "dog"] and start.source == f"detkit checkpoint '{path}'"
    assert start.state.keys() == model.state_dict().keys()
    assert start.architecture["model.backbone.depth"] == 18 and start.architecture["num_classes"] == 2
    assert start.architecture["model.roi_head.fc_dim"] == 32


def test_a_torchvision_detection_file_is_read_in_detkit_layout_without_class_names(tmp_path):
    path = tmp_path / "mine.pth"
    torch.save(torchvision_detector(4).state_dict(), path)
    start = read_start_weights(str(path), log=lambda *_: None)
    assert start.classes is None and "torchvision detection weights" in start.source
    assert start.state["roi_head.predictor.bbox_pred.weight"].shape[0] == 3 * 4  # no background rows
    assert start.architecture["model.backbone.depth"] == 18 and start.architecture["num_classes"] == 3

    cfg = config(**{"model.weights": str(path)})
    lines = []
    model = build_detector(cfg, 3, log=lambda *_: None)
    report = apply_start_weights(model, cfg, ["a", "b", "c"], log=lines.append)
    assert len(report.transferred) == report.total and report.class_matching == "position"
    assert lines[0] == f"transferred {report.total}/{report.total} tensors from {start.source}; classes by " \
                       f"position (the weights name none): 3"


@pytest.mark.parametrize("how", ["file name", "torchvision name"])
def test_torchvision_coco_weights_bring_their_category_names(tmp_path, monkeypatch, how):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch hub's cache: torchvision:NAME is found there
    folder = tmp_path / ("torch/hub/checkpoints" if how == "torchvision name" else "weights")
    folder.mkdir(parents=True)
    torch.save(torchvision_detector(91).state_dict(), folder / COCO_V1_FILE)
    spec = f"torchvision:{COCO_V1}" if how == "torchvision name" else str(folder / COCO_V1_FILE)
    start = read_start_weights(spec, log=lambda *_: None)
    assert start.source == f"torchvision {COCO_V1}"
    assert len(start.classes) == 90 and start.classes[0] == "person" and "N/A" in start.classes

    cfg = config(**{"model.weights": spec, "model.class_map": {"motorbike": "motorcycle"}})
    model = build_detector(cfg, 3, log=lambda *_: None)
    lines = []
    report = apply_start_weights(model, cfg, ["dog", "raccoon", "motorbike"], log=lines.append)
    assert report.classes_matched == {"dog": "dog", "motorbike": "motorcycle"} and report.classes_new == ["raccoon"]
    assert lines[0].endswith("classes from the checkpoint: dog, motorbike (as motorcycle); new: raccoon")
    dog = start.classes.index("dog")
    torch.testing.assert_close(model.state_dict()["roi_head.predictor.cls_score.weight"][1],
                               start.state["roi_head.predictor.cls_score.weight"][1 + dog])


def test_a_resnet_classifier_or_a_foreign_file_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(CheckpointError, match=r"model.weights .* ResNet \(classification\) state dict.*"
                                              r"model.backbone.weights="):
        read_start_weights(str(path), log=lambda *_: None)
    torch.save({"foo.weight": torch.zeros(2)}, tmp_path / "foo.pt")
    with pytest.raises(CheckpointError, match=r"neither a detkit checkpoint nor a torchvision detection"):
        read_start_weights(str(tmp_path / "foo.pt"), log=lambda *_: None)
    with pytest.raises(CheckpointError, match=r"model.weights: .*missing.pt' does not exist"):
        read_start_weights(str(tmp_path / "missing.pt"), log=lambda *_: None)


def test_another_backbone_names_where_the_weights_differ_from_the_config(tmp_path):
    path = tmp_path / "wide.pt"
    detkit_checkpoint(path, ["a"], **{"model.backbone.fpn_channels": 64})
    cfg = config(**{"model.weights": str(path)})
    with pytest.raises(CheckpointError, match=r"backbone tensor\(s\) of another shape.*trained as "
                                              r"model.backbone.fpn_channels=64 \(the config: 32\)"):
        apply_start_weights(build_detector(cfg, 1, log=lambda *_: None), cfg, ["a"], log=lambda *_: None)


# --------------------------------------------------------------------------- the fine-tuning defaults
@pytest.mark.parametrize("values, norm, freeze_at", [
    ({}, "bn", 0),
    ({"model.weights": "w.pt"}, "frozen_bn", 2),
    ({"model.backbone.weights": "r.pth"}, "frozen_bn", 2),
    ({"model.weights": "w.pt", "model.backbone.norm": "bn"}, "bn", 2),
    ({"model.weights": "w.pt", "model.backbone.freeze_at": 0}, "frozen_bn", 0),
    ({"model.backbone.norm": "gn", "model.backbone.freeze_at": 1}, "gn", 1),
    ({"model.weights": "w.pt", "model.backbone.fpn_norm": True}, "bn", 2),  # the FPN's norm must train
    ({"model.weights": "w.pt", "model.backbone.norm": "null"}, "frozen_bn", 2),  # null: automatic
])
def test_backbone_norm_and_freeze_at_default_to_the_fine_tuning_values_with_pretrained_weights(values, norm,
                                                                                            freeze_at):
    cfg = load_config(None, [f"{k}={v}" for k, v in values.items()])
    assert (cfg.model.backbone.norm, cfg.model.backbone.freeze_at) == (norm, freeze_at)
    saved = config_to_dict(cfg)["model"]["backbone"]  # what config.yaml and checkpoints hold
    assert (saved["norm"], saved["freeze_at"]) == (norm, freeze_at)


def test_frozen_layers_without_pretrained_weights_are_warned_about():
    assert frozen_layers_warning(load_config(None)) is None
    assert frozen_layers_warning(load_config(None, ["model.weights=w.pt"])) is None
    message = frozen_layers_warning(load_config(None, ["model.backbone.norm=frozen_bn", "model.backbone.freeze_at=2"]))
    assert "model.backbone.norm = frozen_bn and model.backbone.freeze_at = 2 without pretrained weights" in message
    assert "random" in frozen_layers_warning(load_config(None, ["model.backbone.freeze_at=1"]))
