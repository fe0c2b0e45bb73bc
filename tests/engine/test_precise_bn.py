"""Precise BatchNorm statistics: exact averages of batch statistics, nothing else touched, and the
trainer's checkpoints hold the statistics its evaluations used."""

import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detkit.config import load_config
from detkit.engine.trainer import Trainer
from detkit.evaluation.precise_bn import batch_norm_layers, recompute_bn_stats
from detkit.runtime.memory_format import resolve_memory_format
from detkit.weights.checkpoint import load_checkpoint
from detkit.weights.trained_model import load_trained_model

from .conftest import tiny_overrides


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5))


def batches(count, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, 3, 9, 11, generator=g) * 3 + 1 for _ in range(count)]


def expected_stats(net, inputs):
    """Per BN layer: (mean over batches of the batch mean, mean of the unbiased batch variance), with
    every layer normalising by its batch statistics on the way (training-mode forward)."""
    reference = copy.deepcopy(net).train()
    seen = {i: [] for i, m in enumerate(reference) if isinstance(m, nn.BatchNorm2d)}
    hooks = [reference[i].register_forward_hook(lambda m, inp, out, i=i: seen[i].append(inp[0].detach()))
             for i in seen]
    with torch.no_grad():
        for x in inputs:
            reference(x)
    for h in hooks:
        h.remove()
    return {i: (torch.stack([x.mean((0, 2, 3)) for x in xs]).mean(0),
                torch.stack([x.transpose(0, 1).flatten(1).var(1, unbiased=True) for x in xs]).mean(0))
            for i, xs in seen.items()}


def test_running_stats_are_the_average_of_the_batch_statistics():
    net = small_net().eval()
    inputs = batches(5)
    expected = expected_stats(net, inputs)
    params = {k: v.clone() for k, v in net.named_parameters()}
    used = recompute_bn_stats(net, net, inputs, 5)
    assert used == 5
    for i, (mean, var) in expected.items():
        torch.testing.assert_close(net[i].running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net[i].running_var, var, rtol=1e-5, atol=1e-6)
    for k, v in net.named_parameters():
        assert torch.equal(v, params[k]), k
    assert not net.training  # mode restored
    assert all(bn.momentum == 0.1 and int(bn.num_batches_tracked) == 0 for bn in batch_norm_layers(net))


def test_stats_do_not_depend_on_the_previous_running_values_and_honour_the_batch_cap():
    a, b = small_net(), small_net()
    for bn in batch_norm_layers(b):
        bn.running_mean.fill_(100.0)
        bn.running_var.fill_(0.01)
    inputs = batches(6)
    assert recompute_bn_stats(a, a, inputs, 3) == 3
    assert recompute_bn_stats(b, b, inputs[:3], 10) == 3  # fewer batches than asked: all of them
    for x, y in zip(batch_norm_layers(a), batch_norm_layers(b)):
        assert torch.equal(x.running_mean, y.running_mean) and torch.equal(x.running_var, y.running_var)
    expected = expected_stats(small_net(), inputs[:3])
    torch.testing.assert_close(a[1].running_mean, expected[1][0], rtol=1e-5, atol=1e-6)


def test_a_model_without_batchnorm_is_left_alone():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), FrozenBatchNorm2d(4))
    calls = []
    assert recompute_bn_stats(net, lambda x: calls.append(x), batches(2), 2) == 0
    assert calls == []


def test_empty_batches_raise_and_restore_the_layers():
    net = small_net()
    with pytest.raises(ValueError, match="empty"):
        recompute_bn_stats(net, net, [], 4)
    assert all(bn.momentum == 0.1 for bn in batch_norm_layers(net)) and net.training


def _bn_buffers(state):
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


@pytest.mark.parametrize("precise", [True, False])
def test_trainer_checkpoint_holds_the_precise_statistics(tmp_path, precise):
    # fp32 evaluation: the statistics recomputed below in fp32 are then comparable to 1e-5.
    overrides = tiny_overrides(tmp_path, **{"train.epochs": 1, "eval.precise_bn_batches": 4 if precise else 0,
                                            "eval.precision": "fp32"})
    Trainer(load_config(None, overrides), quiet=True, log=lambda *_: None).run()
    saved = _bn_buffers(load_checkpoint(tmp_path / "run" / "last.pt")["model"])
    assert saved
    # Re-estimating with the saved weights reproduces the saved statistics only if the trainer did it.
    model, cfg, _ = load_trained_model(str(tmp_path / "run" / "last.pt"))
    # In the layout the trainer estimated them in: model.memory_format auto trains fp32 contiguous on a
    # CPU without AVX-512 but loads channels_last, and the two layouts' convolutions differ by more than 1e-5.
    model.set_memory_format(resolve_memory_format(cfg.model.memory_format, training=True))
    from detkit.data.loader import build_loader
    loader = build_loader(cfg, "train", train=False, shuffle=False)
    recompute_bn_stats(model.backbone, lambda batch: model.backbone(model.preprocess(batch[0])[0]), loader, 4)
    again = _bn_buffers(model.state_dict())
    same = all(torch.allclose(saved[k], again[k], rtol=1e-5, atol=1e-6) for k in saved)
    assert same == precise
