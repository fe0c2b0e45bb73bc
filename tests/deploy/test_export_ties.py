"""Eager and exported detectors agree when scores tie: one rule (detkit.ops.score_order) on both sides.

The user report this guards: a one-class detector exported to ONNX matched 383 of its 445 eager
detections, the matched ones to 1e-4 px, while others existed on one side only. Its scores tied:
the eager RPN's ``torch.topk`` and its per-level NMS's final (unstable) sort ordered equal objectness
in no specified order, ONNX's TopK and NonMaxSuppression by index, and the graph pooled the RoIs
level by level, so the RoI head saw its rows, and equal class scores, in another order.

The detector here is trained for a few iterations on the synthetic set's circles alone (one class),
then its RPN head's conv bias is lowered so that most anchors have ReLU-dead features and hence the
same logit (the bias), as a well-trained model's background does, and its box head's last bias so
that many RoIs share one class score.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
import torchvision

from detkit.deploy.export import build_export_model, export_checkpoint
from detkit.deploy.export_graph import nms_threshold
from detkit.ops.nms import nms
from tests.engine.conftest import train_tiny_run

ONE_CLASS = {"data.classes": ["circle"], "data.synthetic.image_size": 128, "data.min_size": [128],
             "data.max_size": 200, "model.backbone.features": "fpn", "model.backbone.fpn_channels": 32,
             "model.anchors.sizes": [[8.0], [16.0], [32.0], [64.0], [128.0]], "model.anchors.ratios": [0.5, 1.0, 2.0],
             "model.rpn.pre_nms_top_n_test": 1000, "model.rpn.post_nms_top_n_test": 1000,
             "model.roi_head.score_thresh": 0.0, "train.max_iters": 30, "train.lr": 0.02}
RPN_DEAD = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)  # candidate bias decrements; the first that makes scores tie is used
ROI_DEAD = tuple(float(d) for d in range(3, 31))  # dense: where class scores collapse depends on the training


def _objectness_ties(logits):
    """(distinct values among the top 1000 of ``logits`` (N,), whether the 1000th value also occurs
    outside the top 1000: a tie that the top-k cut must break)."""
    top = logits.topk(1000).values
    return top.unique().numel(), int((logits == top[-1]).sum()) > 1000 - int((logits > top[-1]).sum())


def _tie_counts(checkpoint, image, rpn_dead, roi_dead):
    """(distinct values among the finest level's top-1000 logits, whether its top-k cut falls in a tie,
    distinct detection scores, detections) of the checkpoint's detector with its biases lowered by
    rpn_dead and roi_dead."""
    predictor, graph, _ = build_export_model(checkpoint, log=lambda *_: None)
    with torch.no_grad():
        predictor.model.rpn.head.conv.bias -= rpn_dead
        predictor.model.roi_head.box_head.fcs[-1].bias -= roi_dead
        features, _ = _features(graph, image)
        distinct, cut_tied = _objectness_ties(graph.rpn_head(features)[0][0].reshape(-1))
    scores = predictor.predict(image)["scores"]
    return distinct, cut_tied, np.unique(scores).size, scores.size


@pytest.fixture(scope="module")
def tied_checkpoint(tmp_path_factory):
    """A one-class checkpoint whose objectness and class scores tie (see the module docstring): the
    smallest bias decrements that leave under 300 distinct values among the finest level's top 1000
    logits, with the top-k cut inside a tie, and under half as many distinct detection scores as
    detections. (Which decrement does it depends on the few training steps' numerics, hence the CPU.)"""
    tmp = tmp_path_factory.mktemp("ties")
    trained = str(train_tiny_run(tmp, **ONE_CLASS) / "best.pt")
    image = _val_image(build_export_model(trained, log=lambda *_: None)[0])
    rpn_dead = next(d for d in RPN_DEAD if (c := _tie_counts(trained, image, d, 0.0))[0] < 300 and c[1])
    roi_dead = next(d for d in ROI_DEAD if 1 < (c := _tie_counts(trained, image, rpn_dead, d))[2] <= c[3] // 2)
    ckpt = torch.load(trained, map_location="cpu", weights_only=False)
    state = ckpt["model"]
    state["rpn.head.conv.bias"] = state["rpn.head.conv.bias"] - rpn_dead
    last_fc = max(k for k in state if k.startswith("roi_head.box_head.fcs.") and k.endswith(".bias"))
    state[last_fc] = state[last_fc] - roi_dead
    path = tmp / "tied.pt"
    torch.save(ckpt, path)
    return str(path)


@pytest.fixture(scope="module")
def models(tied_checkpoint):
    """(the eager Predictor, the ExportableDetector) of the tied checkpoint, fp32, BatchNorm folded."""
    predictor, graph, _ = build_export_model(tied_checkpoint, log=lambda *_: None)
    return predictor, graph


def _val_image(predictor, index=0):
    from detkit.data.formats import build_dataset
    from detkit.data.image_io import read_image

    dataset = build_dataset(predictor.cfg, "val", classes=predictor.classes, log_report=False)
    return read_image(dataset.image_path(index))


def _features(graph, image):
    with torch.no_grad():
        x, new, _ = graph.resize_and_normalise(torch.from_numpy(np.array(image)))
        return list(graph.backbone(x).values()), new


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_of_a_tied_one_class_detector_matches_every_eager_detection(tied_checkpoint, fmt, tmp_path):
    output = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    report = export_checkpoint(tied_checkpoint, fmt, str(output), log=lambda *_: None)
    summary = report["summary"]
    assert summary["detections_eager"] >= 300  # val images and crops: 100 detections each (score_thresh 0)
    assert summary["matched"] == summary["detections_eager"] == summary["detections_exported"], report["images"]
    assert summary["borderline"] == 0 and report["passed"]


def test_the_scores_do_tie(models):
    """The premise: equal objectness logits at the top-k cut of the finest level, equal class scores."""
    predictor, graph = models
    features, _ = _features(graph, _val_image(predictor))
    with torch.no_grad():
        logits = graph.rpn_head(features)[0][0].reshape(-1)  # the finest level, (A, H, W) -> (A*H*W,)
        distinct, cut_tied = _objectness_ties(logits)
        assert distinct < 300 and cut_tied
        found = predictor.predict(_val_image(predictor))
    assert np.unique(found["scores"]).size < len(found["scores"]) // 2


def test_graph_proposals_are_the_eager_rpn_proposals_bit_for_bit(models):
    """Given the same features, the graph's first stage (ONNX's TopK and one NMS per level, in torch) is
    the eager RPN's (topk_stable, per-level NMS): the same boxes in the same order, ties included."""
    predictor, graph = models
    for index in range(3):
        features, new = _features(graph, _val_image(predictor, index))
        with torch.no_grad():
            eager = predictor.model.rpn(features, [(int(new[0]), int(new[1]))])[0][0]
            exported, _ = graph.propose(features, new[0].float(), new[1].float())
        assert eager.shape[0] > 100
        assert torch.equal(eager, exported)


def test_graph_detections_are_the_eager_roi_heads_on_the_same_proposals(models):
    """The RoI head's rows in the eager order on both sides (the graph pools level by level, then
    restores the order), hence the same detections where class scores tie."""
    predictor, graph = models
    model = predictor.model
    features, new = _features(graph, _val_image(predictor))
    size = (int(new[0]), int(new[1]))
    with torch.no_grad():
        proposals = model.rpn(features, [size])[0][0]
        eager = model.roi_head(dict(zip(model.backbone.feature_names, features)), [proposals], [size])[0][0]
        logits, deltas = graph.predictor(graph.box_head(graph.pool(features, proposals)))
        boxes, scores, labels = graph.detect(logits, deltas, proposals, new[0].float(), new[1].float())
    assert eager["scores"].shape == scores.shape and scores.numel() > 50
    torch.testing.assert_close(scores, eager["scores"], rtol=0, atol=1e-5)
    torch.testing.assert_close(boxes, eager["boxes"], rtol=0, atol=1e-3)
    assert torch.equal(labels, eager["labels"])


def test_nms_threshold_is_the_eager_test_in_float32():
    """ONNX's NonMaxSuppression compares the float32 IoU with a float32 threshold: 0.3 would become
    0.30000001, and a pair whose IoU is exactly that float (3 / 10) would stay where the eager NMS
    (float64 threshold) suppresses; the graph passes the largest float32 not above the threshold."""
    ort = pytest.importorskip("onnxruntime")
    boxes = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0, 1.0]])  # IoU 3 / 10 in float32
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.3).tolist() == [0]
    for t in (0.3, 0.5, 0.7, 0.1, 0.9):
        t32 = nms_threshold(t)
        assert t32 <= t and float(np.float32(t32)) == t32 and float(np.nextafter(np.float32(t32), np.float32(1))) > t

    class Nms(torch.nn.Module):
        def forward(self, b, s):
            return torchvision.ops.nms(b, s, nms_threshold(0.3))

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Nms(), (boxes, scores), buffer, input_names=["b", "s"], opset_version=17, dynamo=False)
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    assert session.run(None, {"b": boxes.numpy(), "s": scores.numpy()})[0].tolist() == [0]
    assert torchvision.ops.nms(boxes, scores, nms_threshold(0.3)).tolist() == [0]
