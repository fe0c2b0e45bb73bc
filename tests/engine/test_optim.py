"""Tests of detkit/engine/optim.py: warm-up and schedules, parameter groups."""

import pytest
import torch
from torch import nn

from detkit.config import load_config
from detkit.engine.optim import build_optimizer, build_scheduler, lr_factor


def train_cfg(*overrides):
    return load_config(None, list(overrides)).train

def test_linear_warmup_then_multistep():
    cfg = train_cfg("train.warmup_iters=10", "train.warmup_factor=0.001", "train.lr_steps=[0.5, 0.8]")
    assert lr_factor(0, cfg, 100) == pytest.approx(0.001)
    assert lr_factor(5, cfg, 100) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, cfg, 100) == 1.0
    assert lr_factor(49, cfg, 100) == 1.0
    assert lr_factor(50, cfg, 100) == pytest.approx(0.1)
    assert lr_factor(80, cfg, 100) == pytest.approx(0.01)

def test_cosine_and_constant():
    cos = train_cfg("train.schedule=cosine", "train.warmup_iters=0")
    assert lr_factor(0, cos, 100) == 1.0
    assert lr_factor(50, cos, 100) == pytest.approx(0.5)
    assert lr_factor(100, cos, 100) == pytest.approx(0.0, abs=1e-12)
    const = train_cfg("train.schedule=constant", "train.warmup_iters=0")
    assert lr_factor(77, const, 100) == 1.0

def test_extending_a_run_moves_the_milestones():
    cfg = train_cfg("train.warmup_iters=0", "train.lr_steps=[0.5]")
    assert lr_factor(60, cfg, 100) == pytest.approx(0.1)
    assert lr_factor(60, cfg, 200) == 1.0  # the longer run has its step at 100

def test_scheduler_steps_the_optimizer_lr():
    cfg = train_cfg("train.lr=0.1", "train.warmup_iters=4", "train.warmup_factor=0.5")
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total_iters=100)
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.05, 0.0625, 0.075, 0.0875, 0.1])

@pytest.mark.parametrize("optimizer, cls", [("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW)])
def test_no_decay_on_norm_and_bias(optimizer, cls):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1, bias=False))
    plain = build_optimizer(model, train_cfg(f"train.optimizer={optimizer}"))
    assert isinstance(plain, cls) and len(plain.param_groups) == 1
    split = build_optimizer(model, train_cfg(f"train.optimizer={optimizer}", "train.no_decay_norm_bias=true",
                                             "train.weight_decay=0.01"))
    decay, no_decay = split.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
