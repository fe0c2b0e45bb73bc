"""What CPU this is, in words: its model and the instruction sets that decide detkit's speed.

Training speed ratios against torchvision differ between CPUs of one family (bf16 through AVX512-BF16
on AMD EPYC, through AMX on Intel Xeon), so benchmarks print :func:`describe_cpu` beside every figure.
"""

from __future__ import annotations

import platform
from typing import List

__all__ = ["cpu_model", "cpu_flags", "speed_flags", "describe_cpu", "is_x86", "SPEED_FLAGS", "X86_MACHINES"]

# The flags that matter for detkit's kernels and bf16 autocast, in the order they are printed.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
               "amx_int8", "bf16", "asimd", "sve")

# platform.machine() values (lower case) of x86 CPUs, whose flags name AVX-512 and AMX.
X86_MACHINES = ("x86_64", "amd64", "i686", "x86")


def is_x86(machine: str) -> bool:
    """Whether ``machine`` (a platform.machine() value, any case) is an x86 CPU."""
    return machine.lower() in X86_MACHINES


def _cpuinfo_value(keys: tuple) -> str:
    try:
        with open("/proc/cpuinfo", "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in keys:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform module knows."""
    return _cpuinfo_value(("model name", "Model")) or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> set:
    """The CPU feature flags Linux reports (x86 'flags', ARM 'Features'); empty elsewhere."""
    return set(_cpuinfo_value(("flags", "Features")).split())


def speed_flags(flags: set) -> List[str]:
    """Those of :data:`SPEED_FLAGS` present in ``flags``, in that order."""
    return [flag for flag in SPEED_FLAGS if flag in flags]


def describe_cpu() -> str:
    """E.g. ``AMD EPYC 9R14 (avx2 fma avx512f avx512bw avx512_vnni avx512_bf16; no AMX)``."""
    flags = cpu_flags()
    present = speed_flags(flags)
    amx = "" if not is_x86(platform.machine()) or "amx_bf16" in flags else "; no AMX"
    return f"{cpu_model()} ({' '.join(present) if present else 'no flag list'}{amx})"
