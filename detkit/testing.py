"""Seeded boxes and box sets shared by the tests and the benchmarks.

Shape shorthand: N boxes. ``random_boxes`` gives boxes ``Tensor[N, 4]`` (x1, y1, x2, y2) and
``lognormal_shapes`` box sides ``Tensor[N, 2]`` (w, h); ``uniform_boxes`` and ``clustered_boxes``
give a detector's NMS input ``(boxes Tensor[N, 4], scores Tensor[N])``. All are in `dtype` and give
the same values for the same arguments on every machine (NumPy's PCG64 generator). ``seed`` is an
int, or a ``numpy.random.Generator`` to continue drawing from it (several sets from one stream).
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["random_boxes", "lognormal_shapes", "uniform_boxes", "clustered_boxes"]

Seed = Union[int, np.random.Generator]


def _generator(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def random_boxes(n: int, seed: Seed, canvas: Union[float, Tuple[float, float]] = 1000.0,
                 side: Tuple[float, float] = (10.0, 100.0), *, log_side: bool = False, margin: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """N boxes with independent sides, each placed uniformly at random. Returns Tensor[N, 4].

    Args:
        n: N. seed: int or numpy Generator (see the module docstring).
        canvas: image side S (a square) or its (W, H).
        side: (lo, hi) range of each box's width and height, drawn uniformly, or log-uniformly
            (``exp(U(log lo, log hi))``, as many small boxes as large ones) with log_side.
        margin: boxes lie inside the canvas grown by this much on every side,
            [-margin, W + margin] x [-margin, H + margin]; > 0 gives boxes that cross the image
            border (for clipping). A side longer than that area makes its box cover the area
            and stick out on both sides.
    Draws the (N, 2) sides first, then the (N, 2) positions.
    """
    g = _generator(seed)
    if log_side:
        wh = np.exp(g.uniform(math.log(side[0]), math.log(side[1]), (n, 2)))
    else:
        wh = g.uniform(side[0], side[1], (n, 2))
    extent = np.asarray(canvas, dtype=np.float64) + 2.0 * margin   # S or (W, H)
    xy = g.uniform(0, 1, (n, 2)) * (extent - wh) - margin
    boxes = np.concatenate([xy, xy + wh], 1)  # (N, 2) + (N, 2) -> (N, 4)
    return torch.from_numpy(boxes).to(dtype)


def lognormal_shapes(n: int, seed: Seed, centres: np.ndarray, sigma: float,
                     dtype: torch.dtype = torch.float64) -> Tensor:
    """N box sides (w, h) around a few typical shapes: each box picks one of `centres` (C, 2)
    uniformly and scales its w and h by independent ``exp(sigma * normal)``. Returns Tensor[N, 2]."""
    g = _generator(seed)
    centres = np.asarray(centres, dtype=np.float64)
    pick = g.integers(len(centres), size=n)
    wh = np.exp(np.log(centres[pick]) + sigma * g.standard_normal((n, 2)))
    return torch.from_numpy(wh).to(dtype)


def uniform_boxes(n: int, seed: int, canvas: float = 1000.0, side: Tuple[float, float] = (10.0, 100.0),
                  dtype: torch.dtype = torch.float32) -> Tuple[Tensor, Tensor]:
    """N boxes with sides uniform in `side`, placed uniformly inside a `canvas` x `canvas` image;
    scores uniform in [0, 1). Sparse overlaps: most boxes survive NMS."""
    g = np.random.default_rng(seed)
    boxes = random_boxes(n, g, canvas, side, dtype=dtype)
    return boxes, torch.from_numpy(g.random(n)).to(dtype)


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
