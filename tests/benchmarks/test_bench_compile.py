"""benchmarks/bench_compile.py: what it compiles, in place, and what it refuses."""

import pytest
import torch

from benchmarks import bench_compile
from detkit.config import Config
from detkit.modeling.detector import build_detector


def test_compile_in_place_keeps_the_state_dict_and_wraps_only_the_target():
    model = build_detector(Config(), 2, log=lambda *_: None)
    keys = list(model.state_dict())
    bench_compile.compile_in_place(model, "backbone", dynamic=None)
    # nn.Module.compile: no _orig_mod. prefix, so checkpoints of a compiled run load anywhere
    assert list(model.state_dict()) == keys
    assert model.backbone._compiled_call_impl is not None
    assert model._compiled_call_impl is None and model.rpn._compiled_call_impl is None


def test_unknown_target_is_refused_with_the_choices():
    with pytest.raises(SystemExit, match="backbone, model"):
        bench_compile.compile_in_place(torch.nn.Module(), "head", dynamic=None)
