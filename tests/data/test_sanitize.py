"""detkit/data/sanitize.py: clipping is counted for boxes reaching CLIP_TOLERANCE_PX or more outside
their image; sub-pixel overshoot (label rounding) is clipped without a count. Either way the clipped box
lies exactly inside the image. (The other rules and the vectorised form are held to
sanitize_reference.py in test_scale_index.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from sanitize_reference import reference_sanitize_boxes

from detkit.data.report import FIX_DESCRIPTIONS, DataReport
from detkit.data.sanitize import CLIP_TOLERANCE_PX, sanitize_boxes

H, W = 480, 640


def _inside(boxes):
    return bool(((boxes[:, 0::2] >= 0) & (boxes[:, 0::2] <= W)).all()
                and ((boxes[:, 1::2] >= 0) & (boxes[:, 1::2] <= H)).all())


@pytest.mark.parametrize("overshoot, counted", [
    (1e-4, False), (0.5, False), (CLIP_TOLERANCE_PX - 1e-9, False),  # rounding: clipped silently
    (CLIP_TOLERANCE_PX, True), (5.0, True), (100.0, True),           # real flaws: counted
])
@pytest.mark.parametrize("side", ["left", "top", "right", "bottom"])
def test_overshoot_is_clipped_and_counted_from_the_tolerance_on(overshoot, counted, side):
    box = {"left": [-overshoot, 10, 100, 100], "top": [10, -overshoot, 100, 100],
           "right": [500, 10, W + overshoot, 100], "bottom": [10, 300, 100, H + overshoot]}[side]
    report = DataReport()
    boxes, labels = sanitize_boxes(np.array([box, [1, 2, 3, 4]]), np.array([1, 1]), (H, W), report, "x")
    assert report["clipped"] == int(counted) and report["degenerate_dropped"] == 0
    expected = np.clip(np.array(box, np.float64), 0, [W, H, W, H]).astype(np.float32)
    assert boxes.dtype == np.float32 and boxes[0].tolist() == expected.tolist() and _inside(boxes)
    assert boxes[1].tolist() == [1, 2, 3, 4] and labels.tolist() == [1, 1]
    reference = DataReport()
    ref_boxes, _ = reference_sanitize_boxes(np.array([box, [1, 2, 3, 4]]), np.array([1, 1]), (H, W), reference, "x")
    assert np.array_equal(ref_boxes, boxes) and reference.to_dict() == report.to_dict()


def test_sub_pixel_overshoot_entirely_outside_is_still_dropped_and_counted():
    report = DataReport()
    boxes, _ = sanitize_boxes(np.array([[W, 10, W + 0.5, 20]]), np.array([1]), (H, W), report, "x")
    assert len(boxes) == 0 and report["degenerate_dropped"] == 1 and report["clipped"] == 0


def test_report_description_names_the_tolerance():
    assert f"{CLIP_TOLERANCE_PX:g} px or more outside" in FIX_DESCRIPTIONS["clipped"]
