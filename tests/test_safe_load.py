"""detkit/safe_load.py and the checkpoint readers: one short, safe error per broken file."""

import pytest
import torch

from detkit.errors import CheckpointError
from detkit.safe_load import load_torch_file
from detkit.weights.checkpoint import load_checkpoint, load_weights, save_checkpoint


class NotWeights:
    """An object a weights-only load refuses (unpickling it would run code)."""


def _good(tmp_path):
    path = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.ones(2000)}, "config": {}, "classes": ["a"], "anchor_shapes": []}, path)
    return path


def test_every_broken_file_gets_one_short_line_naming_it(tmp_path):
    good = _good(tmp_path)
    cases = {"truncated.pt": good.read_bytes()[:-300], "garbage.pt": b"\x80\x04 not a pickle at all" * 10,
             "empty.pt": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"model": NotWeights()}, tmp_path / "objects.pt")
    expected = {"truncated.pt": "truncated or corrupt", "garbage.pt": "cannot be read", "empty.pt": "empty",
                "objects.pt": "Python objects other than tensors", "missing.pt": "does not exist"}
    for name, match in expected.items():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert match in message and name in message, message
        assert "\n" not in message and len(message) < 400, message
        assert "weights_only=False" not in message  # never the advice to run the file's code


def test_readers_name_what_they_read(tmp_path):
    torch.save({"model": NotWeights()}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match=r"^model\.backbone\.weights '.*objects\.pt' holds Python objects"):
        load_torch_file(tmp_path / "objects.pt", "model.backbone.weights")
    from detkit.modeling.backbone import load_backbone_weights

    with pytest.raises(CheckpointError, match="model.backbone.weights"):
        load_backbone_weights(None, str(tmp_path / "objects.pt"))


def test_another_model_shape_is_counted_not_pasted(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    other = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Linear(5, 2), torch.nn.Linear(2, 1))
    with pytest.raises(CheckpointError) as info:
        load_weights(model, other.state_dict(), "other.pt")
    message = str(info.value)
    assert "'other.pt'" in message and "2 unexpected keys (2.weight, 2.bias)" in message
    assert "3 keys of another shape" in message and "0.weight (5, 4) vs (3, 4)" in message
    load_weights(model, model.state_dict(), "same.pt")  # a matching state loads
