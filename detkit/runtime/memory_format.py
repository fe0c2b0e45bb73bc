"""Memory layout of a run's feature maps and convolution weights, chosen from ``model.memory_format``.

  auto            contiguous (NCHW) for fp32 training on an x86 CPU without AVX-512, channels_last (NHWC)
                  everywhere else: training in bf16 (oneDNN's fast bf16 convolutions and detkit's RoIAlign
                  kernel work in NHWC), fp32 training on an AVX-512 CPU, on a GPU (what tensor-core
                  convolutions prefer), and inference in any precision.
  channels_last   NHWC always.
  contiguous      NCHW always.

Why fp32 training on an AVX2 CPU is the exception: measured with benchmarks/bench_train.py (variants
detkit_fp32 and detkit_fp32cl) on 2-core AMD EPYC CPUs, oneDNN's AVX2 fp32 convolution backward passes run
1.10-1.22x faster on NCHW tensors, while on an AVX-512 EPYC the two layouts train within 2% of each other
and NHWC infers 4-5% faster (4-7% on AVX2); docs/precision.md has the figures. The weights are the same
numbers in either layout, so checkpoints load into a model of either.
"""

from __future__ import annotations

import platform
from typing import Optional

from detkit.errors import ConfigError
from detkit.runtime.cpu import cpu_flags, is_x86
from detkit.runtime.precision import Precision

__all__ = ["MEMORY_FORMAT_CHOICES", "resolve_memory_format", "fp32_cpu_training_prefers_contiguous"]

MEMORY_FORMAT_CHOICES = ("auto", "channels_last", "contiguous")


def _cpu_flags() -> set:
    """The CPU feature flags (:func:`detkit.runtime.cpu.cpu_flags`); a seam the tests replace."""
    return cpu_flags()


def _machine() -> str:
    """The machine architecture (platform.machine(); a seam the tests replace)."""
    return platform.machine()


def fp32_cpu_training_prefers_contiguous() -> bool:
    """True on an x86 CPU without AVX-512, whose fp32 backward convolutions run faster in NCHW.

    Other CPUs (AVX-512 x86, ARM) keep channels_last: measured no slower on AVX-512, unmeasured on ARM.
    """
    return is_x86(_machine()) and "avx512f" not in _cpu_flags()


def resolve_memory_format(requested: str, precision: Optional[Precision] = None, *, training: bool = False,
                          key: str = "model.memory_format") -> str:
    """Turn a config value (auto / channels_last / contiguous) into the layout a model is built in.

    Args:
        requested: the config value.
        precision: the resolved precision the model runs in (training or inference); None means fp32 on
            the CPU.
        training: whether the model is built to be trained (``auto`` differs only there, and only in
            fp32 on a CPU without AVX-512).

    Returns:
        "channels_last" or "contiguous".

    Raises:
        ConfigError: ``requested`` is not one of :data:`MEMORY_FORMAT_CHOICES`; the message names ``key``.
    """
    if requested not in MEMORY_FORMAT_CHOICES:
        raise ConfigError(f"key '{key}' = {requested!r} is not valid; choose one of "
                          f"{', '.join(MEMORY_FORMAT_CHOICES)}")
    if requested != "auto":
        return requested
    name, device_type = ("fp32", "cpu") if precision is None else (precision.name, precision.device_type)
    if training and device_type == "cpu" and name == "fp32" and fp32_cpu_training_prefers_contiguous():
        return "contiguous"
    return "channels_last"
