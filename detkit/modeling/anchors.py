"""Anchor grids: per-level anchor shapes tiled over feature maps, as torchvision's AnchorGenerator does.

Shape shorthand: L levels, A anchors (shapes) per location and level, H_l / W_l the feature-map
size of level l, N anchors. An anchor shape is a (w, h) in network-input pixels (after the
training resize); aspect ratio means h / w everywhere in detkit.

How the shapes are chosen (manual / kmeans / learned) and how well they fit lives in the
:mod:`detkit.anchors` package; this module only tiles the shapes it is given.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from detkit.errors import ConfigError

__all__ = ["AnchorGenerator", "resolve_anchor_shapes", "shapes_from_sizes_ratios", "strides_for_features",
           "FEATURE_STRIDES"]

# Feature-map strides per ``model.backbone.features``: FPN P2..P6, or one C4 / C5 level.
FEATURE_STRIDES: Dict[str, Tuple[int, ...]] = {"fpn": (4, 8, 16, 32, 64), "c4": (16,), "c5": (32,)}


def strides_for_features(features: str) -> List[int]:
    """Strides of the levels a backbone gives: 'fpn' -> [4, 8, 16, 32, 64], 'c4' -> [16], 'c5' -> [32]."""
    if features not in FEATURE_STRIDES:
        raise ValueError(f"unknown backbone features {features!r}; valid: {', '.join(FEATURE_STRIDES)}")
    return list(FEATURE_STRIDES[features])


def shapes_from_sizes_ratios(sizes: Sequence[Sequence[float]], ratios: Sequence[float]) -> List[List[List[float]]]:
    """Anchor shapes per level from sizes (sqrt of area) x aspect ratios (h / w).

    The order inside a level is torchvision's: ratio-major, then size
    (``w = size / sqrt(r)``, ``h = size * sqrt(r)``), without torchvision's rounding.

    Args:
        sizes: L lists of sizes (the same count on every level); ratios: the ratios shared by all levels.
    Returns:
        L x A x [w, h] nested lists with A = len(ratios) * len(sizes[l]).
    """
    shapes = []
    for level_sizes in sizes:
        level = []
        for r in ratios:
            h_ratio = math.sqrt(float(r))
            for s in level_sizes:
                level.append([float(s) / h_ratio, float(s) * h_ratio])
        shapes.append(level)
    return shapes


def _as_nested_floats(shapes) -> List[List[List[float]]]:
    return [[[float(w), float(h)] for w, h in level] for level in shapes]


def resolve_anchor_shapes(*, checkpoint: Optional[Sequence] = None, configured: Optional[Sequence] = None,
                          fit: Optional[Callable[[], Sequence]] = None, mode: str = "manual",
                          sizes: Sequence[Sequence[float]] = (), ratios: Sequence[float] = (),
                          log: Callable[[str], None] = print) -> List[List[List[float]]]:
    """Where a model's anchor shapes come from: the one place that decides it.

    In this order: ``checkpoint`` (the shapes a saved model was trained with: resume, evaluation,
    inference, export); ``configured`` (``model.anchors.shapes``, set by hand or by a run's saved
    config.yaml); ``fit()`` (the configured mode on the training boxes, :func:`detkit.anchors.fit_anchor_shapes`,
    which a training run passes); else the manual ``sizes`` x ``ratios`` (with a warning when ``mode``
    asked for a fit that nobody ran).

    Returns:
        L x A x [w, h] nested float lists.
    """
    if checkpoint is not None:
        return _as_nested_floats(checkpoint)
    if configured is not None:
        log("anchors: using model.anchors.shapes from the config")
        return _as_nested_floats(configured)
    if fit is not None:
        return _as_nested_floats(fit())
    if mode in ("kmeans", "learned"):
        log(f"warning: model.anchors.mode = '{mode}' but no fitted shapes were given "
            f"(model.anchors.shapes is null); using the manual sizes x ratios")
    elif mode != "manual":
        raise ConfigError(f"key 'model.anchors.mode' = {mode!r} is not valid; choose manual, kmeans or learned")
    return shapes_from_sizes_ratios(sizes, ratios)


def _as_shape_tensor(shapes: Sequence[Sequence[Sequence[float]]] | Tensor) -> Tensor:
    """Validate L x A x 2 shapes and return them as a float64 Tensor[L, A, 2]."""
    t = torch.as_tensor(shapes, dtype=torch.float64) if not isinstance(shapes, Tensor) else shapes.double()
    if t.dim() != 3 or t.shape[-1] != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"anchor shapes must be L x A x (w, h) with L, A >= 1, got a tensor of shape {tuple(t.shape)}")
    if not torch.isfinite(t).all() or (t <= 0).any():
        raise ValueError("anchor shapes must be finite and > 0")
    return t.clone()


class AnchorGenerator(nn.Module):
    """Tiles per-level anchor shapes over feature maps.

    With ``offset=0`` and ``round_base=True`` the output equals torchvision's
    ``AnchorGenerator`` for the same shapes (torchvision rounds its zero-centred base anchors to
    integers and puts anchor centres at ``j * stride``); detkit's default keeps the exact shapes
    (``round_base=False``), so the anchors are the shapes that were fitted.

    Args:
        shapes: L x A x (w, h), the same A on every level (the RPN head is shared across levels).
        strides: L strides in input pixels (the same stride along x and y).
        offset: anchor centre in units of stride: ``(j + offset) * stride`` (0 torchvision, 0.5 Detectron2).
        round_base: round the base anchors ``(-w/2, -h/2, w/2, h/2)`` to integers, as torchvision does.
        strides_from_size: torchvision's strides: per level and axis, the padded image size (the first
            level's size times its stride) // the level's size, instead of the nominal stride. They differ
            where a level's size was rounded up: an 800-row batch has a 13-row P6 of row stride 61, not 64.
    """

    CACHE_SIZE = 64  # distinct (feature sizes, dtype, device) keys kept; padded batch sizes repeat

    def __init__(self, *, shapes: Sequence[Sequence[Sequence[float]]] | Tensor, strides: Sequence[int],
                 offset: float = 0.0, round_base: bool = False, strides_from_size: bool = False) -> None:
        super().__init__()
        shape_t = _as_shape_tensor(shapes)
        if len(strides) != shape_t.shape[0]:
            raise ValueError(f"{shape_t.shape[0]} levels of anchor shapes but {len(strides)} strides {list(strides)}")
        if any(s <= 0 for s in strides):
            raise ValueError(f"strides must be > 0, got {list(strides)}")
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        self.round_base = bool(round_base)
        self.strides_from_size = bool(strides_from_size)
        self._shapes = shape_t
        self._cache: Dict[tuple, List[Tensor]] = {}  # insertion-ordered; oldest dropped beyond CACHE_SIZE

    @property
    def num_anchors_per_location(self) -> int:
        """A, the number of anchors per location (the same on every level)."""
        return int(self._shapes.shape[1])

    @property
    def num_levels(self) -> int:
        return int(self._shapes.shape[0])

    @property
    def shapes(self) -> Tensor:
        """Tensor[L, A, 2] (w, h) float32, a copy."""
        return self._shapes.float().clone()

    def shapes_list(self) -> List[List[List[float]]]:
        """The shapes as L x A x [w, h] nested lists (what ``model.anchors.shapes`` stores)."""
        return self._shapes.tolist()

    def set_shapes(self, shapes: Sequence[Sequence[Sequence[float]]] | Tensor) -> None:
        """Replace the shapes (e.g. during online refinement); L and A must stay the same. Clears the cache."""
        shape_t = _as_shape_tensor(shapes)
        if shape_t.shape != self._shapes.shape:
            raise ValueError(f"new anchor shapes have shape {tuple(shape_t.shape)}, "
                             f"expected {tuple(self._shapes.shape)}")
        self._shapes = shape_t
        self._cache.clear()

    def base_anchors(self, level: int, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> Tensor:
        """Zero-centred anchors of one level: Tensor[A, 4] (-w/2, -h/2, w/2, h/2)."""
        wh = self._shapes[level]  # (A, 2) float64
        base = torch.cat((-wh, wh), dim=1) / 2  # (A, 2) + (A, 2) -> (A, 4)
        if self.round_base:
            base = base.round()
        return base.to(dtype=dtype, device=device)

    def grid_anchors(self, level: int, feature_size: Tuple[int, int], dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu", stride: Optional[Tuple[int, int]] = None) -> Tensor:
        """Anchors of one level over an (H_l, W_l) feature map: Tensor[H_l*W_l*A, 4] xyxy.

        Order: row-major positions (y outer, x inner), then the A shapes, as in torchvision.
        ``stride``: (row, column) stride; default the level's nominal stride on both axes.
        """
        height, width = int(feature_size[0]), int(feature_size[1])
        stride_y, stride_x = stride if stride is not None else (self.strides[level], self.strides[level])
        base = self.base_anchors(level, torch.float64, device)  # (A, 4)
        shifts_x = (torch.arange(width, dtype=torch.float64, device=device) + self.offset) * stride_x  # (W,)
        shifts_y = (torch.arange(height, dtype=torch.float64, device=device) + self.offset) * stride_y  # (H,)
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")  # (H, W) each
        shift_x = shift_x.reshape(-1)  # (H, W) -> (H*W,)
        shift_y = shift_y.reshape(-1)  # (H, W) -> (H*W,)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)  # (H*W, 4)
        # (H*W, 1, 4) + (1, A, 4) -> (H*W, A, 4) -> (H*W*A, 4)
        anchors = (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)
        return anchors.to(dtype)

    def forward(self, feature_sizes: Sequence[Tuple[int, int]], dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> List[Tensor]:
        """Anchors for the feature maps of one (padded) batch, one tensor per level.

        Args:
            feature_sizes: L pairs (H_l, W_l).
        Returns:
            L tensors Tensor[H_l*W_l*A, 4] xyxy in input pixels; cached per (sizes, dtype, device),
            so callers must not modify them in place.
        """
        sizes = tuple((int(h), int(w)) for h, w in feature_sizes)
        if len(sizes) != self.num_levels:
            raise ValueError(f"got {len(sizes)} feature maps but the anchor generator has {self.num_levels} levels")
        key = (sizes, dtype, str(torch.device(device)))
        cached = self._cache.get(key)
        if cached is None:
            strides = self.level_strides(sizes)
            cached = [self.grid_anchors(level, size, dtype, device, stride)
                      for level, (size, stride) in enumerate(zip(sizes, strides))]
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = cached
        return list(cached)

    def level_strides(self, feature_sizes: Sequence[Tuple[int, int]]) -> List[Tuple[int, int]]:
        """(row, column) stride of each level for these feature sizes: the nominal strides, or with
        ``strides_from_size`` torchvision's ``padded size // feature size`` (the padded size being the
        first level's size times its stride, exact as the batch is padded to a multiple of it)."""
        if not self.strides_from_size:
            return [(s, s) for s in self.strides]
        padded_h, padded_w = feature_sizes[0][0] * self.strides[0], feature_sizes[0][1] * self.strides[0]
        return [(padded_h // max(h, 1), padded_w // max(w, 1)) for h, w in feature_sizes]

    def extra_repr(self) -> str:
        return (f"levels={self.num_levels}, anchors_per_location={self.num_anchors_per_location}, "
                f"strides={self.strides}, offset={self.offset}, round_base={self.round_base}, "
                f"strides_from_size={self.strides_from_size}")
