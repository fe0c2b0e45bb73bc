"""The precision / memory-format variants the speed benchmarks compare (bench_model.py, bench_train.py).

  detkit_fp32   detkit as before issue 18: fp32, contiguous (NCHW) tensors, BatchNorm unfolded
  detkit_fast   bf16 autocast + channels_last; inference also folds BatchNorm into the convolutions
  detkit_fp32cl fp32 with channels_last tensors: what `model.memory_format: auto` trains in fp32 on an
                AVX-512 CPU (on an AVX2 CPU auto trains fp32 contiguous, as detkit_fp32)
  tv_fp32       torchvision's FasterRCNN as a user runs it today: fp32, contiguous
  tv_fast       torchvision with the same bf16 autocast and channels_last weights, so that
                detkit_fast / tv_fast is what detkit's own code adds beyond the two switches

A plain name (``detkit``, ``tv``, ``tv_bn``) is the fp32 contiguous model, as in earlier results.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch
from torch import nn

from detkit.modeling.fold_bn import fold_batch_norm
from detkit.runtime.precision import Precision, resolve_precision

__all__ = ["Variant", "parse_variant", "make_variants", "refresh_inference_model", "DEFAULT_VARIANTS"]

DEFAULT_VARIANTS = "detkit_fp32,detkit_fast,tv_fp32,tv_fast"


@dataclass
class Variant:
    """One row: ``base`` model family (detkit, tv, tv_bn), its precision and layout."""

    name: str
    base: str
    fast: bool
    train_model: nn.Module
    infer_model: nn.Module
    precision: Precision

    def autocast(self):
        return self.precision.autocast()  # fp32 variants hold Precision("fp32"): no autocast


# name suffix -> (bf16 autocast, memory format)
_SUFFIXES = (("_fast", True, "channels_last"), ("_fp32cl", False, "channels_last"), ("_fp32", False, "contiguous"))


def parse_variant(name: str) -> tuple:
    """(base, fast, memory format) of a variant name: 'detkit_fast' -> ('detkit', True, 'channels_last');
    'tv_fp32' or 'tv' -> ('tv', False, 'contiguous'); 'detkit_fp32cl' -> ('detkit', False, 'channels_last')."""
    for suffix, fast, layout in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)], fast, layout
    return name, False, "contiguous"


def make_variants(names: List[str], build: Callable[[str], nn.Module], *, log=print) -> Dict[str, Variant]:
    """``build(base)`` returns a fresh fp32 contiguous model of that family (same seed every call).

    Fast variants get channels_last weights; detkit's fast inference model is a BatchNorm-folded copy
    (torchvision's FrozenBatchNorm2d is left as torchvision runs it). Raises ConfigError where the CPU
    has no native bf16 (the fast rows would measure emulation)."""
    cpu = torch.device("cpu")
    bf16 = None
    out = {}
    for name in names:
        base, fast, layout = parse_variant(name)
        model = build(base)
        precision = Precision("fp32", "cpu")
        infer_model = model
        if fast:
            bf16 = bf16 or resolve_precision("bf16", cpu, key="benchmark fast variants", log=log)
            precision = bf16
            if hasattr(model, "set_memory_format"):
                model.set_memory_format("channels_last")
            else:
                model.to(memory_format=torch.channels_last)
            if base == "detkit":
                infer_model = copy.deepcopy(model).eval()
                fold_batch_norm(infer_model)
        elif hasattr(model, "set_memory_format"):
            model.set_memory_format(layout)
        elif layout == "channels_last":
            model.to(memory_format=torch.channels_last)
        out[name] = Variant(name, base, fast, model, infer_model, precision)
    return out


def refresh_inference_model(variant: Variant) -> None:
    """Refresh a folded inference copy from the training model (after warm-up steps changed it)."""
    if variant.infer_model is variant.train_model:
        return
    fresh = copy.deepcopy(variant.train_model).eval()
    fold_batch_norm(fresh)
    variant.infer_model = fresh
