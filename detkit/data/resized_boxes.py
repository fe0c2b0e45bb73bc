"""The training boxes after the training resize, without decoding an image (for anchor fitting and the linter).

Anchor fitting (detkit/anchors/boxes.py) and the data linter (detkit/data/lint.py) need every box as
the RPN sees it: scaled by torchvision's resize rule (detkit/data/transforms.py) at each training
scale. Only the annotation and the header size of each image are read, so this is cheap even for
COCO; scale jitter and crops are random and not applied.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from detkit.config import DataConfig
from detkit.data.transforms import resize_scale, resized_size

__all__ = ["resized_annotations"]


def resized_annotations(dataset, data_cfg: Optional[DataConfig], *, min_size: Optional[Sequence[int]] = None,
                        max_size: Optional[int] = None) -> List[dict]:
    """Every image's boxes after the resize, without decoding an image.

    Args:
        dataset: any detkit data set (uses image_sizes and get_annotation).
        data_cfg: gives the defaults of min_size and max_size (None when both are given).
        min_size: shorter-side sizes to resize to (default: data_cfg.min_size, the training scales;
            with several, each image appears once per size).
        max_size: default data_cfg.max_size.

    Returns:
        list of {"index": i, "boxes": float32 (N, 4) resized, "size": (h, w) resized, "scale": (sy, sx)}.
    """
    sizes = list(data_cfg.min_size) if min_size is None else [int(s) for s in np.atleast_1d(min_size)]
    max_size = data_cfg.max_size if max_size is None else int(max_size)
    out = []
    for i, (h, w) in enumerate(dataset.image_sizes):
        boxes = dataset.get_annotation(i)["boxes"]
        for s in sizes:
            nh, nw = resized_size((h, w), resize_scale((h, w), s, max_size))
            sy, sx = nh / h, nw / w
            out.append({"index": i, "boxes": (boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32),
                        "size": (nh, nw), "scale": (sy, sx)})
    return out
