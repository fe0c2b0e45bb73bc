"""detkit.ops as a public API (like torchvision.ops): every exported name, and nms against torchvision."""

import subprocess
import sys

import pytest
import torch
import torchvision

import detkit.ops
from detkit.testing import clustered_boxes, uniform_boxes


def test_all_names_import_and_are_callable():
    namespace = {}
    exec("from detkit.ops import *", namespace)
    exported = {name: value for name, value in namespace.items() if not name.startswith("__")}
    assert len(detkit.ops.__all__) == len(set(detkit.ops.__all__))
    assert sorted(exported) == sorted(detkit.ops.__all__)
    for name, value in exported.items():
        assert callable(value), name
        # the function its module defines, not a module of the same name (nms, soft_nms, roi_align)
        assert getattr(sys.modules[value.__module__], name) is value, name


def test_import_in_a_fresh_process():
    code = "from detkit.ops import nms, batched_nms, box_iou; print(nms.__module__, callable(batched_nms))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["detkit.ops.nms", "True"]


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("make", [uniform_boxes, clustered_boxes], ids=["uniform", "clustered"])
def test_nms_keeps_what_torchvision_keeps(make, seed, thr):
    boxes, scores = make(2000, seed)
    ours = detkit.ops.nms(boxes, scores, thr)
    theirs = torchvision.ops.nms(boxes, scores, thr)
    assert ours.dtype == torch.int64
    assert torch.equal(ours, theirs)
    assert 0 < ours.numel() < boxes.shape[0]   # the set has both kept and suppressed boxes
