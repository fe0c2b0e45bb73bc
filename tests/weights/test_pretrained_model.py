"""detkit.load_model with torchvision weights by name: the cache file is read, the detections are torchvision's.

Nothing is downloaded: the weights are random, written by torchvision's builder under the file name
torchvision's weights API expects, into a temporary TORCH_HOME.
"""

from __future__ import annotations

import os
import urllib.error

import numpy as np
import pytest
import torch
from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights, fasterrcnn_resnet50_fpn

import detkit
from detkit.errors import CheckpointError

NAME = "torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1"
SMALL = ["data.test_min_size=320", "data.max_size=512"]  # torchvision's transform at a test-sized scale


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    with torch.no_grad():  # random weights with many detections
        model.roi_heads.box_predictor.cls_score.weight.mul_(30)
    torch.save(model.state_dict(), checkpoints / os.path.basename(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url))
    return home


@pytest.fixture
def in_torch_home(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


def _image() -> np.ndarray:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (12, 16, 3)).astype(np.float32)
    import cv2

    return cv2.resize(small, (300, 225), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def test_load_model_by_name_gives_torchvision_detections(in_torch_home):
    model = detkit.load_model(NAME, overrides=SMALL, log=lambda *_: None)
    assert model.cfg.data.test_resize == "model" and model.cfg.model.backbone.norm_eps == 0.0
    assert model.cfg.model.backbone.norm == "frozen_bn" and model.cfg.model.weights == NAME
    assert len(model.classes) == 90 and model.classes[0] == "person"
    reference = fasterrcnn_resnet50_fpn(weights=FasterRCNN_ResNet50_FPN_Weights.COCO_V1, min_size=320,
                                        max_size=512).eval()
    image = _image()
    found = model.predict(image)
    with torch.inference_mode():
        expected = reference([torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    categories = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    assert len(expected["boxes"]) > 10
    assert found["class_names"] == [categories[k] for k in expected["labels"].tolist()]
    np.testing.assert_allclose(found["boxes"], expected["boxes"].numpy(), atol=1e-2, rtol=0)
    np.testing.assert_allclose(found["scores"], expected["scores"].numpy(), atol=1e-4, rtol=0)


def test_a_state_dict_file_loads_with_its_categories(in_torch_home):
    path = in_torch_home / "hub" / "checkpoints" / os.path.basename(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url)
    model = detkit.load_model(str(path), overrides=SMALL, log=lambda *_: None)
    assert model.classes[:3] == ["person", "bicycle", "car"] and model.cfg.model.backbone.norm_eps == 0.0


def test_empty_torch_home_names_the_cache_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError) as info:
        detkit.load_model(NAME, log=lambda *_: None)
    message = str(info.value)
    expected_path = os.path.join(str(tmp_path), "hub", "checkpoints",
                                 os.path.basename(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url))
    assert "\n" not in message and expected_path in message
    assert FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url in message


def test_a_detkit_checkpoint_still_loads_as_before(tmp_path):
    """The dispatch reads a detkit checkpoint as one (its config, classes and anchors), not as torchvision's."""
    from tests.engine.conftest import train_tiny_run

    run = train_tiny_run(tmp_path)
    model = detkit.load_model(os.path.join(run, "last.pt"), log=lambda *_: None)
    assert model.cfg.data.test_resize == "pipeline" and model.cfg.model.weights is None
