"""detkit/weights/trained_model.py: what the checkpoint arguments of eval, infer and load_model accept."""

import pathlib

import pytest

from detkit.errors import CheckpointError
from detkit.weights.trained_model import checkpoint_paths, load_trained_models


def test_one_checkpoint_or_a_list_become_a_list_of_paths():
    assert checkpoint_paths("runs/a/best.pt") == ["runs/a/best.pt"]
    assert checkpoint_paths(pathlib.Path("runs/a/best.pt")) == ["runs/a/best.pt"]
    assert checkpoint_paths(["a.pt", pathlib.Path("b.pt")]) == ["a.pt", "b.pt"]


def test_no_checkpoint_is_a_clear_error():
    with pytest.raises(CheckpointError, match="no checkpoint given"):
        load_trained_models([])
