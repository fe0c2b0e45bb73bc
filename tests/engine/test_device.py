"""detkit/runtime/device.py (the device check every entry point makes first), train.cudnn_benchmark, and
the step losses that stay on the device until a hook reads them (detkit/engine/hooks/base.py)."""

import math

import pytest
import torch

import tools.eval as eval_tool
import tools.infer as infer_tool
import tools.train as train_tool
from detkit.config import load_config
from detkit.engine.hooks import NaNGuardHook, StepInfo, StepLosses
from detkit.engine.trainer import train
from detkit.errors import ConfigError, TrainingError
from detkit.runtime.device import cuda_unavailable_reason, resolve_device
from tests.engine.hooks.fake_trainer import epoch_end, fake_trainer

from .conftest import tiny_overrides

no_gpu = pytest.mark.skipif(cuda_unavailable_reason() is None, reason="checks a machine without CUDA")


def test_cpu_and_bad_names():
    assert resolve_device("cpu", key="train.device") == torch.device("cpu")
    assert resolve_device(torch.device("cpu"), key="x") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device = 'gpu0' is not a device"):
        resolve_device("gpu0", key="--device")
    with pytest.raises(ConfigError, match="'cpu' or 'cuda'"):
        resolve_device("meta", key="--device")


@no_gpu
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_one_line_naming_the_key(name):
    with pytest.raises(ConfigError) as info:
        resolve_device(name, key="train.device")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"train.device = '{name}'")
    assert "CUDA is not available" in message and "set train.device to 'cpu'" in message


@no_gpu
def test_tools_stop_before_any_work(tmp_path, capsys):
    """--device cuda / train.device: cuda: the error comes before the data set is built or scanned."""
    overrides = tiny_overrides(tmp_path)
    assert train_tool.main(["--device", "cuda", "--quiet", *overrides]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device = 'cuda'") and len(err.splitlines()) == 1
    with pytest.raises(ConfigError, match="^train.device = 'cuda'"):
        train(load_config(None, overrides + ["train.device=cuda"]), quiet=True, log=lambda *_: None)
    assert not (tmp_path / "synthetic").exists() and not (tmp_path / "run").exists()  # no data report ran
    assert eval_tool.main(["--checkpoint", str(tmp_path / "missing.pt"), "--device", "cuda", "--quiet"]) == 1
    assert infer_tool.main(["--checkpoint", str(tmp_path / "missing.pt"), str(tmp_path), "--device", "cuda"]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("error: --device = 'cuda' asks for a GPU") for e in errors)


def test_cudnn_benchmark_key():
    assert load_config(None, ["train.cudnn_benchmark=true"]).train.cudnn_benchmark is True
    assert load_config(None).train.cudnn_benchmark is False
    with pytest.raises(ConfigError, match="train.cudnn_benchmark' expects bool"):
        load_config(None, ["train.cudnn_benchmark=fast"])


def test_step_losses_read_once_as_a_mapping():
    losses = StepLosses(["loss_a", "loss_b"], torch.tensor([0.5, 0.25]))
    assert losses.on_host
    assert dict(losses) == {"loss_a": 0.5, "loss_b": 0.25, "loss": 0.75}
    assert list({**losses}) == ["loss_a", "loss_b", "loss"] and len(losses) == 3


def _device_step(iteration, values):
    return StepInfo(epoch=1, iteration=iteration, losses=StepLosses(["loss_a", "loss_b"], torch.tensor(values)),
                    lr=0.01, img_per_s=1.0)


def test_nan_guard_defers_reading_device_losses(tmp_path, monkeypatch):
    """Losses not on the host are checked every check_every steps and at the epoch's end, and the
    error names the first bad iteration and its losses."""
    monkeypatch.setattr(StepLosses, "on_host", property(lambda self: self._floats is not None))
    reads = []
    original = StepLosses._read
    monkeypatch.setattr(StepLosses, "_read", lambda self: reads.append(1) or original(self))
    trainer = fake_trainer(tmp_path, last_good_checkpoint="run/last.pt")
    guard = NaNGuardHook(check_every=5)
    for i in (1, 2):
        guard.after_step(trainer, _device_step(i, [1.0, 2.0]))
    guard.after_step(trainer, _device_step(3, [math.nan, 2.0]))
    guard.after_step(trainer, _device_step(4, [math.inf, 2.0]))  # a later bad step does not hide the first
    with pytest.raises(TrainingError) as info:
        guard.after_step(trainer, _device_step(5, [1.0, 1.0]))
    message = str(info.value)
    assert "at iteration 3" in message and "loss_a=nan" in message and "run/last.pt" in message
    assert not reads  # the losses themselves were never read
    late = NaNGuardHook(check_every=100)
    late.after_step(trainer, _device_step(7, [1.0, -math.inf]))
    with pytest.raises(TrainingError, match="at iteration 7"):
        late.after_epoch(trainer, epoch_end(0))
    fine = NaNGuardHook(check_every=2)
    for i in range(1, 5):
        fine.after_step(trainer, _device_step(i, [1.0, 2.0]))
    fine.after_epoch(trainer, epoch_end(0))
