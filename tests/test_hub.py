"""detkit.hub: torchvision weights names resolved from torch hub's cache (a temporary TORCH_HOME; the
downloader is replaced, so nothing touches the network), and a weights file's state dict."""

from __future__ import annotations

import dataclasses
import os
import urllib.error
from types import SimpleNamespace

import pytest
import torch
import torchvision

from detkit import hub
from detkit.errors import CheckpointError, ConfigError

KEY = "model.backbone.weights"
R18 = "ResNet18_Weights.IMAGENET1K_V1"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME (restored afterwards) whose downloader fails as offline, recording its calls."""
    home = tmp_path / "torch_home"
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a torch.hub.set_dir() elsewhere would beat TORCH_HOME
    monkeypatch.setenv("TORCH_HOME", str(home))
    downloads = []

    def offline(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, dst, hash_prefix))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return SimpleNamespace(home=home, checkpoints=home / "hub" / "checkpoints", downloads=downloads)


def cache_weights(name: str, state) -> str:
    """Save ``state`` where torchvision keeps the weights ``name`` (torch hub's cache); return the path."""
    url = torchvision.models.get_weight(name).url
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)
    return path


def tiny_state():
    return {"conv1.weight": torch.randn(4, 3, 3, 3), "bn1.running_mean": torch.zeros(4)}


# --------------------------------------------------------------------------- names
def test_a_cached_name_resolves_to_torchvisions_own_cache_file(torch_home):
    path = cache_weights(R18, tiny_state())
    resolved = hub.resolve_weights(f"torchvision:{R18}", key=KEY, log=pytest.fail)
    assert resolved.path == path == str(torch_home.checkpoints / "resnet18-f37072fd.pth")
    assert resolved.name == R18
    assert resolved.url == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert len(resolved.categories) == 1000 and resolved.categories[0] == "tench"
    assert torch_home.downloads == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolved.path = "elsewhere"


def test_default_and_detection_names_resolve(torch_home):
    cache_weights("ResNet50_Weights.IMAGENET1K_V2", tiny_state())
    resolved = hub.resolve_weights("torchvision:ResNet50_Weights.DEFAULT", key=KEY)
    assert resolved.name == "ResNet50_Weights.IMAGENET1K_V2"  # DEFAULT names the member it stands for
    for name in ("FasterRCNN_ResNet50_FPN_Weights.COCO_V1", "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1"):
        cache_weights(name, tiny_state())
        resolved = hub.resolve_weights(f"torchvision:{name}", key=KEY)
        assert resolved.name == name and resolved.categories[:2] == ["__background__", "person"]


def test_offline_and_not_cached_is_one_line_naming_url_and_exact_path(torch_home):
    with pytest.raises(CheckpointError) as info:
        hub.resolve_weights("torchvision:ResNet50_Weights.IMAGENET1K_V2", key=KEY, log=lambda s: None)
    message = str(info.value)
    url = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
    path = os.path.join(str(torch_home.checkpoints), "resnet50-11ad3fa6.pth")
    assert message.startswith(f"{KEY}: torchvision:ResNet50_Weights.IMAGENET1K_V2 is not in torch hub's cache")
    assert f"download {url} and put it at {path}" in message and "URLError" in message
    assert "\n" not in message
    assert torch_home.downloads == [(url, path, "11ad3fa6")]  # torchvision's hash check, into that exact path


def test_a_download_lands_in_the_cache(torch_home, monkeypatch):
    def fake_download(url, dst, hash_prefix=None, progress=True):
        torch_home.downloads.append((url, dst, hash_prefix))
        torch.save(tiny_state(), dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    lines = []
    resolved = hub.resolve_weights(f"torchvision:{R18}", key=KEY, log=lines.append)
    assert os.path.isfile(resolved.path) and torch_home.downloads[0][1:] == (resolved.path, "f37072fd")
    assert any("downloading" in line and resolved.path in line for line in lines)
    hub.resolve_weights(f"torchvision:{R18}", key=KEY)  # the second time it is cached
    assert len(torch_home.downloads) == 1


@pytest.mark.parametrize("typo, nearest", [
    ("FasterRCNN_ResNet50_FPN_Weight.COCO_V1", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"),
    ("ResNet50_Weights.IMAGENET_V2", "ResNet50_Weights.IMAGENET1K_V2"),
    ("resnet50_weights.imagenet1k_v2", "ResNet50_Weights.IMAGENET1K_V2"),
    ("ResNet18_Weights", "ResNet18_Weights.DEFAULT"),
])
def test_a_typo_suggests_the_nearest_names(torch_home, typo, nearest):
    with pytest.raises(ConfigError) as info:
        hub.resolve_weights(f"torchvision:{typo}", key=KEY)
    message = str(info.value)
    assert message.startswith(f"{KEY}: 'torchvision:{typo}' is not a torchvision weights name")
    assert f"'torchvision:{nearest}'" in message and "\n" not in message
    assert torch_home.downloads == []


@pytest.mark.parametrize("spec, hint", [
    (f"tv:{R18}", f"write 'torchvision:{R18}'"),
    (R18, f"write 'torchvision:{R18}'"),
    (f"torchvision.{R18}", f"write 'torchvision:{R18}'"),
    ("resnet18_weights.imagenet_v1", f"'torchvision:{R18}'"),
])
def test_a_name_written_otherwise_gets_a_hint(torch_home, spec, hint):
    with pytest.raises(CheckpointError, match="does not exist") as info:
        hub.resolve_weights(spec, key=KEY)
    assert hint in str(info.value) and KEY in str(info.value)


def test_a_local_path_is_returned_as_is(tmp_path, torch_home):
    path = tmp_path / "my_weights.pth"
    torch.save(tiny_state(), path)
    assert hub.resolve_weights(str(path), key=KEY) == hub.ResolvedWeights(path=str(path))
    with pytest.raises(CheckpointError) as info:
        hub.resolve_weights(str(tmp_path / "missing_weights.pth"), key=KEY)
    assert str(info.value) == f"{KEY}: '{tmp_path / 'missing_weights.pth'}' does not exist"  # no hint for a file


@pytest.mark.parametrize("path, name", [
    ("/somewhere/fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", "FasterRCNN_ResNet50_FPN_Weights.COCO_V1"),
    ("resnet18-f37072fd.pth", R18),
    ("resnet50-11ad3fa6.pth", "ResNet50_Weights.IMAGENET1K_V2"),
    ("/somewhere/resnet18.pth", None),
])
def test_weights_name_for_file(path, name):
    assert hub.weights_name_for_file(path) == name


# --------------------------------------------------------------------------- torch.distributed
@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_zero_downloads_and_every_rank_meets_the_barrier(torch_home, monkeypatch, rank):
    calls = []
    monkeypatch.setattr(hub.dist, "is_available", lambda: True)
    monkeypatch.setattr(hub.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(hub.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(hub.dist, "get_rank", lambda: rank)
    monkeypatch.setattr(hub.dist, "barrier", lambda: calls.append("barrier"))
    with pytest.raises(CheckpointError, match="could not be downloaded"):  # offline: rank 0 fails, after the barrier
        hub.resolve_weights(f"torchvision:{R18}", key=KEY, log=lambda s: None)
    assert calls == ["barrier"]
    assert len(torch_home.downloads) == (1 if rank == 0 else 0)


# --------------------------------------------------------------------------- read_state_dict
@pytest.mark.parametrize("wrap", [None, "model", "state_dict", "model_state_dict"])
def test_read_state_dict_unwraps(tmp_path, wrap):
    state = tiny_state()
    path = tmp_path / "w.pth"
    torch.save(state if wrap is None else {wrap: state, "epoch": 3, "classes": ["a"]}, path)
    out = hub.read_state_dict(str(path), key=KEY)
    assert out.keys() == state.keys() and all(torch.equal(out[k], state[k]) for k in state)


def test_read_state_dict_strips_the_ddp_prefix_only_when_every_key_has_it(tmp_path):
    torch.save({"module." + k: v for k, v in tiny_state().items()}, tmp_path / "ddp.pth")
    assert sorted(hub.read_state_dict(str(tmp_path / "ddp.pth"), key=KEY)) == ["bn1.running_mean", "conv1.weight"]
    torch.save({"module.a": torch.zeros(1), "b": torch.zeros(1)}, tmp_path / "mixed.pth")
    assert sorted(hub.read_state_dict(str(tmp_path / "mixed.pth"), key=KEY)) == ["b", "module.a"]


@pytest.mark.parametrize("content, match", [
    ([1, 2, 3], "holds a list, not a state dict"),
    (torch.zeros(2, 3), "holds a single tensor of shape (2, 3), not a state dict"),
    ({}, "holds an empty dict"),
    ({"conv1.weight": "a string"}, "whose values are not all tensors"),
    (torch.nn.Linear(2, 2), "holds a pickled object that weights-only loading refuses"),
])
def test_read_state_dict_refuses_what_is_not_one(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError) as info:
        hub.read_state_dict(str(path), key=KEY)
    message = str(info.value)
    assert message.startswith(f"{KEY} '{path}'") and match in message and "\n" not in message, message
    if isinstance(content, torch.nn.Module):
        assert "save model.state_dict() instead" in message
    else:
        assert "expected a dict of parameter names to tensors" in message
