"""detkit.anchors: choosing the anchor shapes (manual / kmeans / learned) and measuring them.

The anchor generator itself is model code (:mod:`detkit.modeling.anchors`); this package holds
everything that looks at training boxes to pick its shapes. NumPy and small torch fits, no
training loop.

Modules:
    boxes.py    the training boxes as the fits see them (resized, mirrored, offsets to the grid)
    metrics.py  BoxSet and the anchor metrics of ANCHORS.md (mBIoU, grid mIoU, recall, positives)
    fit.py      level rule, IoU k-means, hill climb, the adopt-only-if-better rule shared by the fits
    learned.py  learned shapes: gradient descent on a smooth best IoU (LearnedAnchors, fit_learned)
    modes.py    every sizing mode on a training set; ``anchor_shapes_for_training``, the trainer's entry point
    online.py   learned shapes refined online during the LR warm-up (OnlineAnchorWarmup)
    report.py   the report behind tools/anchors.py: table, anchors.json, anchors.png
"""

from detkit.anchors.modes import MODES, anchor_shapes_for_training, resolve_anchor_shapes
from detkit.anchors.online import OnlineAnchorWarmup

__all__ = ["MODES", "anchor_shapes_for_training", "resolve_anchor_shapes", "OnlineAnchorWarmup"]
