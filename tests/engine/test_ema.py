"""The moving average of the weights: its update rule, and a trainer that evaluates, saves and resumes it."""

import math

import pytest
import torch
from torch import nn

from detkit.config import ConfigError, load_config
from detkit.engine.ema import ModelEMA
from detkit.engine.hooks import EMAHook
from detkit.engine.hooks import evaluation as evaluation_module
from detkit.engine.trainer import Trainer
from detkit.weights.checkpoint import load_checkpoint

from .conftest import tiny_overrides


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_update_follows_the_ramped_decay_and_copies_integer_buffers():
    net = _net()
    ema = ModelEMA(net, decay=0.9, tau=10.0)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for step in (1, 2, 3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(step * 0.5)
        net.train()(torch.randn(5, 3))  # moves the BatchNorm running statistics and the batch counter
        d = 0.9 * (1 - math.exp(-step / 10.0))
        assert ema.current_decay() == pytest.approx(d)
        ema.update(net)
        for name, value in net.state_dict().items():
            if value.is_floating_point():
                expected[name] = d * expected[name] + (1 - d) * value
            else:
                expected[name] = value.clone()
    for name, value in ema.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-6, msg=name)
    assert ema.model.state_dict()["1.num_batches_tracked"].item() == 3
    assert ema.updates == 3
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert all(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("decay, tau", [(0.0, 10.0), (1.0, 10.0), (0.9, 0.0)])
def test_bad_decay_or_tau_is_rejected(decay, tau):
    with pytest.raises(ValueError, match="EMA"):
        ModelEMA(_net(), decay=decay, tau=tau)


@pytest.mark.parametrize("value", ["0", "1.0", "1.5"])
def test_config_names_the_key_of_a_bad_decay(tmp_path, value):
    with pytest.raises(ConfigError, match=r"train.ema_decay"):
        load_config(None, tiny_overrides(tmp_path, **{"train.ema_decay": value}))


def test_trainer_evaluates_saves_and_resumes_the_average_exactly(tmp_path, monkeypatch):
    evaluated = []
    real_evaluation = evaluation_module.run_evaluation

    def recording_evaluation(model, *args, **kwargs):
        evaluated.append({k: v.clone() for k, v in model.state_dict().items()})
        return real_evaluation(model, *args, **kwargs)

    monkeypatch.setattr(evaluation_module, "run_evaluation", recording_evaluation)
    ema = {"train.ema_decay": 0.8, "train.ema_tau": 2.0, "train.eval_every": 0}

    def cfg(out, **extra):
        return load_config(None, tiny_overrides(tmp_path, **{"output.dir": str(tmp_path / out), **ema, **extra}))

    Trainer(cfg("full"), quiet=True, log=lambda *_: None).run()
    full = load_checkpoint(tmp_path / "full" / "last.pt")
    assert full["ema_updates"] == full["iteration"]
    # The evaluated weights are the saved "model" (the average, with its precise BatchNorm statistics),
    # and they are not the trained weights.
    assert len(evaluated) == 1
    for name, value in full["model"].items():
        torch.testing.assert_close(evaluated[0][name], value, rtol=0, atol=0, msg=name)
    weight = next(k for k in full["model"] if k.endswith("cls_score.weight"))
    assert not torch.equal(full["model"][weight], full["train_model"][weight])

    Trainer(cfg("part", **{"train.max_iters": 3}), quiet=True, log=lambda *_: None).run()
    messages = []
    Trainer(cfg("part"), resume=True, quiet=True, log=messages.append).run()
    part = load_checkpoint(tmp_path / "part" / "last.pt")
    for key in ("model", "train_model"):
        for name in full[key]:
            torch.testing.assert_close(part[key][name], full[key][name], rtol=0, atol=0, msg=f"{key}: {name}")
    assert part["ema_updates"] == full["ema_updates"]
    assert any("moving average" in m for m in messages)


def test_resuming_without_the_average_trains_on_from_the_trained_weights(tmp_path):
    base = {"train.eval_every": 0, "train.max_iters": 2, "output.dir": str(tmp_path / "run")}
    Trainer(load_config(None, tiny_overrides(tmp_path, **base, **{"train.ema_decay": 0.8})),
            quiet=True, log=lambda *_: None).run()
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    messages = []
    trainer = Trainer(load_config(None, tiny_overrides(tmp_path, **base)), resume=True, quiet=True,
                      log=messages.append)
    trainer.setup()
    assert not any(isinstance(h, EMAHook) for h in trainer.hooks)
    assert trainer.eval_model is trainer.bare_model
    assert any("moving average is dropped" in m for m in messages), messages
    for name, value in trainer.bare_model.state_dict().items():
        torch.testing.assert_close(value, saved["train_model"][name], rtol=0, atol=0, msg=name)


def test_turning_the_average_on_at_resume_starts_it_from_the_checkpoint_weights(tmp_path):
    base = {"train.eval_every": 0, "train.max_iters": 2, "output.dir": str(tmp_path / "run")}
    Trainer(load_config(None, tiny_overrides(tmp_path, **base)), quiet=True, log=lambda *_: None).run()
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    assert "train_model" not in saved
    messages = []
    trainer = Trainer(load_config(None, tiny_overrides(tmp_path, **base, **{"train.ema_decay": 0.8})),
                      resume=True, quiet=True, log=messages.append)
    trainer.setup()
    assert any("no moving average" in m for m in messages), messages
    # Both the trained weights and the average start from the checkpoint's only weights, and the
    # average's ramp starts over, so it follows the trained weights closely at first.
    ema = next(h for h in trainer.hooks if isinstance(h, EMAHook)).ema
    for model in (trainer.bare_model, ema.model):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, saved["model"][name], rtol=0, atol=0, msg=name)
    assert ema.updates == 0


def test_eval_tool_evaluates_the_trained_weights_on_request(tmp_path, capsys):
    import tools.eval as eval_tool
    from detkit.weights.trained_model import load_trained_model

    base = {"train.eval_every": 0, "train.max_iters": 2}
    Trainer(load_config(None, tiny_overrides(tmp_path, **base, **{"train.ema_decay": 0.8,
                                                                  "output.dir": str(tmp_path / "ema")})),
            quiet=True, log=lambda *_: None).run()
    saved = load_checkpoint(tmp_path / "ema" / "last.pt")
    for key in ("model", "train_model"):
        model, _, _ = load_trained_model(str(tmp_path / "ema" / "last.pt"), weights=key)
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, saved[key][name], rtol=0, atol=0, msg=f"{key}: {name}")
    assert eval_tool.main(["--checkpoint", str(tmp_path / "ema" / "last.pt"), "--trained-weights",
                           "--output-dir", str(tmp_path / "eval"), "--quiet"]) == 0
    assert (tmp_path / "eval" / "eval.json").is_file()

    # Without a moving average there are no separate trained weights: a clear error, not a silent fallback.
    Trainer(load_config(None, tiny_overrides(tmp_path, **base, **{"output.dir": str(tmp_path / "plain")})),
            quiet=True, log=lambda *_: None).run()
    capsys.readouterr()
    assert eval_tool.main(["--checkpoint", str(tmp_path / "plain" / "last.pt"), "--trained-weights",
                           "--quiet"]) == 1
    assert "train.ema_decay" in capsys.readouterr().err
