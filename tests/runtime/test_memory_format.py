"""model.memory_format: auto resolves to contiguous for fp32 training on an x86 CPU without AVX-512 only;
explicit values pass."""

import pytest
import torch

from detkit.config import load_config
from detkit.errors import ConfigError
from detkit.modeling.detector import build_detector
from detkit.runtime import memory_format as memory_format_module
from detkit.runtime.memory_format import resolve_memory_format
from detkit.runtime.precision import Precision

FP32_CPU, BF16_CPU = Precision("fp32", "cpu"), Precision("bf16", "cpu")
AVX2_FLAGS = {"avx2", "fma"}
AVX512_FLAGS = {"avx2", "fma", "avx512f", "avx512bw", "avx512_bf16"}


def _pretend_cpu(monkeypatch, machine: str, flags: set) -> None:
    monkeypatch.setattr(memory_format_module, "_machine", lambda: machine)
    monkeypatch.setattr(memory_format_module, "_cpu_flags", lambda: set(flags))


@pytest.fixture
def avx2_cpu(monkeypatch):
    _pretend_cpu(monkeypatch, "x86_64", AVX2_FLAGS)


@pytest.mark.parametrize("precision, training, expected", [
    (FP32_CPU, True, "contiguous"),         # oneDNN's AVX2 fp32 backward passes are faster in NCHW
    (BF16_CPU, True, "channels_last"),      # its bf16 convolutions and detkit's RoIAlign want NHWC
    (Precision("fp32", "cuda"), True, "channels_last"),
    (Precision("bf16", "cuda"), True, "channels_last"),
    (FP32_CPU, False, "channels_last"),     # fp32 inference is faster in NHWC
    (BF16_CPU, False, "channels_last"),
    (None, False, "channels_last"),
    (None, True, "contiguous"),             # no precision given: fp32 on the CPU
])
def test_auto_follows_the_precision_and_the_job(avx2_cpu, precision, training, expected):
    assert resolve_memory_format("auto", precision, training=training) == expected


@pytest.mark.parametrize("machine, flags, expected", [
    ("x86_64", AVX2_FLAGS, "contiguous"),
    ("x86_64", AVX512_FLAGS, "channels_last"),   # measured within 2% in training, faster in inference
    ("x86_64", AVX512_FLAGS | {"amx_bf16"}, "channels_last"),
    ("aarch64", {"asimd", "bf16"}, "channels_last"),  # unmeasured: the layout detkit always used
])
def test_fp32_cpu_training_layout_depends_on_the_instruction_set(monkeypatch, machine, flags, expected):
    _pretend_cpu(monkeypatch, machine, flags)
    assert resolve_memory_format("auto", FP32_CPU, training=True) == expected
    assert resolve_memory_format("auto", BF16_CPU, training=True) == "channels_last"
    assert resolve_memory_format("auto", FP32_CPU, training=False) == "channels_last"


@pytest.mark.parametrize("value", ["channels_last", "contiguous"])
@pytest.mark.parametrize("precision", [FP32_CPU, BF16_CPU, Precision("fp16", "cuda")])
def test_an_explicit_layout_is_kept_whatever_the_precision(value, precision):
    assert resolve_memory_format(value, precision, training=True) == value
    assert resolve_memory_format(value, precision, training=False) == value


def test_an_unknown_layout_names_the_key_and_the_choices():
    with pytest.raises(ConfigError, match=r"'model.memory_format' = 'nhwc'.*auto, channels_last, contiguous"):
        resolve_memory_format("nhwc", FP32_CPU, training=True)
    with pytest.raises(ConfigError, match="model.memory_format"):
        load_config(None, ["model.memory_format=nhwc"])


def test_auto_is_the_default():
    assert load_config(None, []).model.memory_format == "auto"


def test_a_model_built_for_inference_is_channels_last_where_fp32_training_would_not_be(avx2_cpu):
    # build_detector serves detkit infer / eval / load_model: auto means the inference layout there,
    # even on the CPU where the trainer re-lays an fp32 model out contiguous.
    cfg = load_config(None, [])
    assert cfg.model.memory_format == "auto"
    assert resolve_memory_format("auto", FP32_CPU, training=True) == "contiguous"
    model = build_detector(cfg, num_classes=3, log=lambda *_: None)
    assert model.memory_format == torch.channels_last
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
