"""What anchor fitting needs to know about a run, and nothing else: :class:`AnchorSetup`.

The anchors package sees a run through this one value (the ``model.anchors`` settings, the feature
strides, the training resize and the flips), never through the whole Config: a fit's inputs are
then visible in one place, and the config stays out of the numerical code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from detkit.config import AnchorConfig, Config
from detkit.modeling.anchors import strides_for_features

__all__ = ["AnchorSetup"]


@dataclass(frozen=True)
class AnchorSetup:
    """The anchor geometry of a run.

    Attributes:
        settings: the ``model.anchors`` section (mode, sizes, ratios, offset and the fits' settings).
        strides: feature stride of every level, L values (from ``model.backbone.features``).
        size_divisible: the batch padding multiple (``model.size_divisible``): where the grid ends.
        min_size: the training resize's shorter-side scales (``data.min_size``; each box is seen at each).
        max_size: the training resize's longer-side cap (``data.max_size``).
        hflip, vflip: whether the augmentation mirrors images (a mirrored box sits at another grid offset).
    """

    settings: AnchorConfig
    strides: Tuple[int, ...]
    size_divisible: int
    min_size: Tuple[int, ...]
    max_size: int
    hflip: bool = False
    vflip: bool = False

    @classmethod
    def from_config(cls, cfg: Config) -> "AnchorSetup":
        """The setup of the run ``cfg`` describes (the one place the anchors package reads a Config)."""
        return cls(settings=cfg.model.anchors, strides=tuple(strides_for_features(cfg.model.backbone.features)),
                   size_divisible=int(cfg.model.size_divisible), min_size=tuple(int(s) for s in cfg.data.min_size),
                   max_size=int(cfg.data.max_size), hflip=cfg.data.augment.hflip_prob > 0,
                   vflip=cfg.data.augment.vflip_prob > 0)

    @property
    def offset(self) -> float:
        """The anchor centres' offset within a cell (``model.anchors.offset``)."""
        return self.settings.offset

    def grid(self) -> dict:
        """The keyword arguments of the anchor metrics: ``strides``, ``offset``, ``size_divisible``."""
        return {"strides": list(self.strides), "offset": self.offset, "size_divisible": self.size_divisible}
