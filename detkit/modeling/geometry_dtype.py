"""Where reduced precision stops: the dtype box arithmetic, losses and the Numba kernels work in.

Under ``torch.autocast`` (bf16 on the CPU, bf16 or fp16 on CUDA) the convolutions and Linear layers
return reduced-precision tensors. Everything geometric must not: bf16 keeps 8 significant bits, so a
box coordinate near 400 px would be rounded to a multiple of 2 px, and exp() of a bf16 delta is off by
up to 0.4%. The heads therefore hand their outputs over in :func:`geometry_dtype` (float32 for a
reduced-precision tensor, its own dtype otherwise, so float64 checks stay float64), and anchors,
decoding, matching, NMS and the losses run in it.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["REDUCED_DTYPES", "geometry_dtype", "to_geometry"]

REDUCED_DTYPES = (torch.bfloat16, torch.float16)


def geometry_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for bf16 / fp16, else ``dtype`` unchanged."""
    return torch.float32 if dtype in REDUCED_DTYPES else dtype


def to_geometry(t: Tensor) -> Tensor:
    """``t`` in :func:`geometry_dtype` (a no-op, no copy, for float32 and float64)."""
    return t.to(geometry_dtype(t.dtype))
