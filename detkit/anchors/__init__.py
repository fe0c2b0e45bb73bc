"""detkit.anchors: choosing the anchor shapes (manual / kmeans / learned) and measuring them.

The anchor generator itself is model code (:mod:`detkit.modeling.anchors`, which also holds
``resolve_anchor_shapes``, the one place that decides where a run's shapes come from); this package
holds everything that looks at training boxes to pick them. NumPy and small torch fits, no training
loop. It sees a run through an :class:`AnchorSetup` (never the whole Config), returns shapes, and
never talks to other processes: the trainer broadcasts what it returns.

Modules:
    setup.py    AnchorSetup: model.anchors, the strides, the training resize and the flips
    boxes.py    the training boxes as the fits see them (resized, mirrored, offsets to the grid)
    metrics.py  BoxSet and the anchor metrics of docs/anchors.md (mBIoU, grid mIoU, recall, positives)
    fit.py      level rule, IoU k-means, hill climb, the adopt-only-if-better rule shared by the fits
    learned.py  learned shapes: gradient descent on a smooth best IoU (LearnedAnchors, fit_learned)
    modes.py    every sizing mode on a training set; ``fit_anchor_shapes``, the fit a training run asks for
    online.py   learned shapes refined online during the LR warm-up (OnlineAnchorWarmup)
    report.py   the report behind `detkit anchors`: table, anchors.json, anchors.png
"""

from detkit.anchors.modes import MODES, fit_anchor_shapes
from detkit.anchors.online import OnlineAnchorWarmup
from detkit.anchors.setup import AnchorSetup

__all__ = ["MODES", "AnchorSetup", "fit_anchor_shapes", "OnlineAnchorWarmup"]
