"""Seeded box sets shaped like a detector's NMS input, shared by the tests and the benchmarks.

Shape shorthand: N boxes. Every function returns ``(boxes Tensor[N, 4] xyxy, scores Tensor[N])`` in
`dtype`, the same values for the same arguments on every machine (NumPy's PCG64 generator).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import Tensor

__all__ = ["uniform_boxes", "clustered_boxes"]


def uniform_boxes(n: int, seed: int, canvas: float = 1000.0, side: Tuple[float, float] = (10.0, 100.0),
                  dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
    """N boxes with sides uniform in `side`, placed uniformly inside a `canvas` x `canvas` image;
    scores uniform in [0, 1). Sparse overlaps: most boxes survive NMS."""
    g = np.random.default_rng(seed)
    wh = g.uniform(side[0], side[1], (n, 2))
    xy = g.uniform(0, 1, (n, 2)) * (canvas - wh)
    boxes = np.concatenate([xy, xy + wh], 1)  # (N, 2) + (N, 2) -> (N, 4)
    return torch.from_numpy(boxes).to(dtype), torch.from_numpy(g.random(n)).to(dtype)


def clustered_boxes(n: int, seed: int, objects: int = 12, canvas: Tuple[float, float] = (1333.0, 800.0),
                    dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
    """RPN-like proposals: N jittered copies of `objects` boxes (sides 20..300 in a `canvas` (w, h)
    image), each score falling with its copy's jitter. Dense overlaps: NMS removes most of them."""
    g = np.random.default_rng(seed)
    wh = g.uniform(20, 300, (objects, 2))
    xy = g.uniform(0, 1, (objects, 2)) * (np.asarray(canvas) - wh)
    which = g.integers(0, objects, n)
    size = np.repeat(wh, 2, 1)[which]  # (N, 4): (w, w, h, h) of each copy's object
    jitter = g.normal(0, 0.1, (n, 4)) * size
    boxes = np.concatenate([xy, xy + wh], 1)[which] + jitter
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)  # at least 1 px wide and tall
    scores = np.exp(-np.abs(jitter / size).sum(1)) * g.uniform(0.5, 1, n)
    return torch.from_numpy(boxes).to(dtype), torch.from_numpy(scores).to(dtype)
