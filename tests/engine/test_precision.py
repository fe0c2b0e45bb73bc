"""Training and inference precision: resolution and messages, exact resume in bf16, checkpoints across precisions."""

import json

import pytest
import torch

from detkit.config import config_from_dict, load_config
from detkit.engine.trainer import Trainer
from detkit.errors import ConfigError
from detkit.evaluation.evaluate import run_evaluation
from detkit.runtime import memory_format as memory_format_module
from detkit.runtime import precision as precision_module
from detkit.runtime.precision import Precision, resolve_precision
from detkit.weights.checkpoint import load_checkpoint
from detkit.weights.trained_model import load_trained_model, prepare_inference

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU computes bf16 natively (it computes it either way; only the speed differs)."""
    monkeypatch.setenv("DETKIT_CPU_BF16", "1")


def test_fp32_and_bf16_resolve_on_the_cpu(native_bf16):
    assert resolve_precision("fp32", CPU, key="train.precision") == Precision("fp32", "cpu")
    lines = []
    assert resolve_precision("auto", CPU, key="train.precision", log=lines.append).name == "bf16"
    assert lines and "train.precision: auto -> bf16" in lines[0]
    assert Precision("bf16", "cpu").dtype == torch.bfloat16 and not Precision("bf16", "cpu").uses_grad_scaler


def test_a_cpu_without_bf16_names_the_key_and_what_it_lacks(monkeypatch):
    monkeypatch.delenv("DETKIT_CPU_BF16", raising=False)
    monkeypatch.setattr(precision_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: {"avx2", "avx512f", "avx512bw"})
    with pytest.raises(ConfigError, match=r"key 'eval.precision' = 'bf16': this CPU lacks the AVX512-BF16"):
        resolve_precision("bf16", CPU, key="eval.precision")
    lines = []
    assert resolve_precision("auto", CPU, key="train.precision", log=lines.append).name == "fp32"
    assert "auto -> fp32" in lines[0] and "AVX512-BF16" in lines[0]  # the fall-back is printed, never silent
    monkeypatch.setattr(precision_module, "_cpu_flags", lambda: {"avx512_bf16"})
    assert resolve_precision("bf16", CPU, key="train.precision").name == "bf16"


def test_fp16_on_the_cpu_is_an_error():
    with pytest.raises(ConfigError, match="'train.precision' = 'fp16' needs a CUDA device"):
        resolve_precision("fp16", CPU, key="train.precision")


def test_an_unknown_precision_is_rejected_by_the_config():
    with pytest.raises(ConfigError, match="train.precision"):
        load_config(None, ["train.precision=bf32"])


def test_the_old_amp_key_still_loads():
    assert config_from_dict({"train": {"amp": False}}).train.precision == "fp32"
    assert config_from_dict({"train": {"amp": True}}).train.precision == "auto"
    with pytest.raises(ConfigError, match="train.amp"):
        config_from_dict({"train": {"amp": "yes"}})


def _run(tiny_cfg, out, **extra):
    cfg = tiny_cfg(**{"output.dir": str(out), "train.eval_every": 0, **extra})
    Trainer(cfg, quiet=True, log=lambda *_: None).run()


# Two bf16 trainings: on a CPU that emulates bf16 (AVX2 only) they are the slowest test of this file,
# so there they run under -m slow (CI), and in the default suite where bf16 is native.
@(pytest.mark.slow if precision_module.cpu_bf16_missing() else (lambda test: test))
def test_bf16_resume_equals_the_uninterrupted_bf16_run(tiny_cfg, tmp_path, native_bf16):
    bf16 = {"train.precision": "bf16", "model.memory_format": "channels_last"}
    _run(tiny_cfg, tmp_path / "full", **bf16)
    _run(tiny_cfg, tmp_path / "part", **bf16, **{"train.max_iters": 3})
    cfg = tiny_cfg(**{"output.dir": str(tmp_path / "part"), "train.eval_every": 0, **bf16})
    Trainer(cfg, resume=True, quiet=True, log=lambda *_: None).run()
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype != torch.bfloat16, key  # checkpoints hold fp32 weights
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("trained, evaluated", [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_checkpoint_evaluates_in_the_other_precision(tiny_cfg, tmp_path, native_bf16, trained, evaluated):
    _run(tiny_cfg, tmp_path / "run", **{"train.precision": trained, "eval.precision": trained,
                                        "train.max_iters": 4, "model.roi_head.score_thresh": 0.0})
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(v.dtype in (torch.float32, torch.int64) for v in ckpt["model"].values())
    model, cfg, ckpt = load_trained_model(str(tmp_path / "run" / "last.pt"), overrides=[f"eval.precision={evaluated}"])
    precision = prepare_inference(model, cfg, CPU, log=lambda *_: None)
    assert precision.name == evaluated
    from detkit.data.formats import build_dataset

    val = build_dataset(cfg, "val", classes=ckpt["classes"])
    metrics, results = run_evaluation(model, val, cfg, CPU, progress=False, precision=precision)
    assert results and all(torch.isfinite(torch.tensor(r["bbox"])).all() for r in results)
    # The other precision scores about what the training run's own final evaluation scored.
    trained_metrics = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert metrics["num_images"] == trained_metrics["num_images"]
    assert abs(metrics["coco"]["AP50"] - trained_metrics["coco"]["AP50"]) < 0.1


@pytest.mark.parametrize("precision, requested, expected", [
    ("fp32", "auto", "contiguous"), ("bf16", "auto", "channels_last"),
    ("fp32", "channels_last", "channels_last"), ("bf16", "contiguous", "contiguous"),
])
def test_the_trainer_lays_the_model_out_for_its_training_precision(tiny_cfg, tmp_path, native_bf16, monkeypatch,
                                                                   precision, requested, expected):
    # auto's fp32 choice depends on the CPU: pretend an AVX2 one, where it differs from bf16's.
    monkeypatch.setattr(memory_format_module, "_machine", lambda: "x86_64")
    monkeypatch.setattr(memory_format_module, "_cpu_flags", lambda: {"avx2", "fma"})
    cfg = tiny_cfg(**{"output.dir": str(tmp_path / "run"), "train.precision": precision,
                      "model.memory_format": requested, "train.ema_decay": 0.99})
    lines = []
    trainer = Trainer(cfg, quiet=True, log=lines.append)
    trainer.setup()
    layout = torch.channels_last if expected == "channels_last" else torch.contiguous_format
    assert trainer.memory_format == expected
    for model in (trainer.bare_model, trainer.eval_model):  # the EMA copy (evaluated and saved) too
        assert model.memory_format == layout
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
        assert conv.weight.is_contiguous(memory_format=layout)
    assert any(f"memory format {expected}" in line for line in lines)
