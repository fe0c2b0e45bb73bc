"""Numeric precision of a run: which autocast a step or an evaluation runs under, chosen from the config.

``train.precision`` and ``eval.precision`` take one of:

  auto   bf16 where the hardware computes it natively (a CPU with AVX512-BF16 or AMX, an ARM CPU with
         the BF16 extension, a CUDA GPU that supports bf16), else fp16 on an older CUDA GPU, else fp32;
         the choice and the reason are printed.
  fp32   no autocast.
  bf16   torch.autocast(dtype=bfloat16): convolutions and Linear layers in bf16, weights kept in fp32.
  fp16   torch.autocast(dtype=float16) with a gradient scaler; CUDA only.

What autocast leaves in fp32 is listed in detkit/modeling/geometry_dtype.py (anchors, box coding,
matching, NMS, losses, the Numba kernels' inputs); BatchNorm keeps fp32 statistics and the optimizer
fp32 master weights because the parameters themselves stay fp32 (autocast casts copies), so a
checkpoint always holds fp32 weights and evaluates in any precision.

A CPU without native bf16 would run bf16 through oneDNN's emulation, slower than fp32: an explicit
``bf16`` there is a ConfigError naming the key and the missing CPU feature; ``auto`` falls back to
fp32 and says so.
"""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from detkit.errors import ConfigError
from detkit.runtime.cpu import cpu_flags, is_x86

__all__ = ["PRECISIONS", "Precision", "autocast_of", "cpu_bf16_missing", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` in fp32 / bf16 / fp16 on ``device_type`` ("cpu" or "cuda")."""

    name: str
    device_type: str

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The autocast dtype, None for fp32."""
        return _DTYPES[self.name]

    @property
    def uses_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range and needs none."""
        return self.name == "fp16"

    def autocast(self):
        """The context a forward pass runs under (a no-op context for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def autocast_of(precision: Optional[Precision]):
    """The autocast context of ``precision``; None (a caller that was given no precision) means fp32."""
    return precision.autocast() if precision is not None else contextlib.nullcontext()


def _cpu_flags() -> set:
    """The CPU feature flags (:func:`detkit.runtime.cpu.cpu_flags`); a seam the tests replace."""
    return cpu_flags()


def cpu_bf16_missing() -> Optional[str]:
    """None when this CPU computes bf16 natively, else what it lacks (for the message).

    ``DETKIT_CPU_BF16=0`` or ``=1`` overrides the detection (a CPU the flags misreport, or tests).
    """
    forced = os.environ.get("DETKIT_CPU_BF16")
    if forced in ("0", "1"):
        return None if forced == "1" else "native bf16 (DETKIT_CPU_BF16=0 says this CPU has none)"
    machine = platform.machine().lower()
    flags = _cpu_flags()
    if is_x86(machine):
        if flags & {"avx512_bf16", "amx_bf16"}:
            return None
        return "the AVX512-BF16 or AMX-BF16 instructions (bf16 would run emulated, slower than fp32)"
    if machine in ("aarch64", "arm64"):
        if "bf16" in flags:
            return None
        return "the ARMv8.6 BF16 extension (bf16 would run emulated, slower than fp32)"
    return f"a known native bf16 unit (machine {platform.machine() or 'unknown'})"


def resolve_precision(requested: str, device: torch.device, *, key: str,
                      log: Callable[[str], None] = print) -> Precision:
    """Turn a config value (auto / fp32 / bf16 / fp16) into the precision this device runs.

    Raises:
        ConfigError: fp16 on the CPU, or bf16 on hardware without it; the message names ``key``.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"key '{key}' = {requested!r} is not valid; choose one of {', '.join(PRECISIONS)}")
    kind = device.type
    if kind == "cuda":
        bf16_ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if requested == "auto":
            name = "bf16" if bf16_ok else "fp16"
            log(f"{key}: auto -> {name} on CUDA")
            return Precision(name, kind)
        if requested == "bf16" and not bf16_ok:
            raise ConfigError(f"key '{key}' = 'bf16': this GPU does not support bf16; use fp16 or fp32")
        return Precision(requested, kind)
    if kind != "cpu":
        if requested in ("auto", "fp32"):
            return Precision("fp32", kind)
        raise ConfigError(f"key '{key}' = {requested!r} is supported on 'cpu' and 'cuda' only, not {kind!r}")
    if requested == "fp16":
        raise ConfigError(f"key '{key}' = 'fp16' needs a CUDA device; on the CPU use bf16 (or fp32)")
    if requested == "fp32":
        return Precision("fp32", kind)
    missing = cpu_bf16_missing()
    if requested == "bf16" and missing:
        raise ConfigError(f"key '{key}' = 'bf16': this CPU lacks {missing}; set {key}=fp32 (or auto)")
    if requested == "auto":
        if missing:
            log(f"{key}: auto -> fp32, because this CPU lacks {missing}")
            return Precision("fp32", kind)
        log(f"{key}: auto -> bf16 (the CPU computes bf16 natively)")
    return Precision("bf16", kind)
