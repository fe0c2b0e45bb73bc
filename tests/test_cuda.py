"""The CUDA path end to end: CPU/CUDA parity of the box ops and the detector, AMP training, checkpoints
crossing devices, torchrun over nccl. Every test skips, with the reason, where CUDA is unavailable;
benchmarks/gpu_check.sh runs this file on a GPU machine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detkit.config import load_config
from detkit.modeling.detector import build_detector
from detkit.ops.matching import match_max_iou
from detkit.ops.nms import batched_nms, nms
from detkit.ops.roi_align import multilevel_roi_align
from detkit.runtime.device import cuda_unavailable_reason
from detkit.testing import random_boxes
from tests.engine.conftest import tiny_overrides
from tests.ops.test_matching import fpn_anchors, random_gt

_REASON = cuda_unavailable_reason()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=f"needs CUDA: {_REASON}")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def exact_fp32():
    """No TF32 in matmuls and convolutions: CPU/CUDA comparisons at float32 rounding."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def assert_same_keep(scores, keep_cpu, keep_cuda):
    """Equal kept indices, or (equal scores ordered differently) equal kept scores (torchvision's test)."""
    keep_cuda = keep_cuda.cpu()
    if not torch.equal(keep_cpu, keep_cuda):
        assert keep_cpu.shape == keep_cuda.shape
        torch.testing.assert_close(scores[keep_cpu], scores[keep_cuda], rtol=0, atol=0)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("seed", [0, 1])
def test_nms_and_batched_nms_parity(threshold, seed):
    for n in (500, 3000):  # batched: both sides of torchvision's coordinate-trick switch
        boxes = random_boxes(n, seed, 600.0, (5.0, 200.0))
        scores = torch.rand(n, generator=torch.Generator().manual_seed(seed))
        idxs = torch.randint(0, 7, (n,), generator=torch.Generator().manual_seed(seed + 1))
        assert_same_keep(scores, nms(boxes, scores, threshold), nms(boxes.to(CUDA), scores.to(CUDA), threshold))
        assert_same_keep(scores, batched_nms(boxes, scores, idxs, threshold),
                         batched_nms(boxes.to(CUDA), scores.to(CUDA), idxs.to(CUDA), threshold))
    empty = torch.zeros((0, 4), device=CUDA)
    assert nms(empty, empty[:, 0], 0.5).shape == (0,)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("low_quality", [True, False])
def test_matching_parity_with_ignore_boxes_and_without_ground_truth(seed, low_quality):
    anchors = fpn_anchors(480, 640, seed)
    gt = random_gt(20, seed, 480, 640)
    ignore = random_gt(3, seed + 9, 480, 640, side=(40.0, 160.0))
    cases = [(gt, {}), (gt, {"ignore_boxes": ignore, "ignore_iof_thresh": 0.5}),
             (torch.zeros((0, 4)), {}), (torch.zeros((0, 4)), {"ignore_boxes": ignore, "ignore_iof_thresh": 0.5})]
    for g, kwargs in cases:
        cpu = match_max_iou(anchors, g, 0.7, 0.3, low_quality, **kwargs)
        on_gpu = {k: v.to(CUDA) for k, v in kwargs.items() if torch.is_tensor(v)}
        cuda = match_max_iou(anchors.to(CUDA), g.to(CUDA), 0.7, 0.3, low_quality,
                             **{**kwargs, **on_gpu})
        assert cuda[0].device.type == cuda[1].device.type == "cuda"
        assert torch.equal(cuda[0].cpu(), cpu[0]) and torch.equal(cuda[1].cpu(), cpu[1])


@pytest.mark.parametrize("aligned", [False, True])
def test_roi_align_parity_values_and_gradients(aligned):
    from tests.ops.test_roi_align import make_rois

    gen = torch.Generator().manual_seed(3)
    sizes, scales = [(64, 80), (32, 40), (16, 20), (8, 10)], [0.25, 0.125, 0.0625, 0.03125]
    feats = [torch.randn(2, 16, h, w, generator=gen) for h, w in sizes]
    rois = make_rois(3, 400, 2, 256, 320, 1.0, max_side=200.0)
    levels = torch.randint(0, 4, (400,), generator=gen)
    grad = torch.randn(400, 16, 7, 7, generator=gen)
    cpu_in = [f.clone().requires_grad_() for f in feats]
    cuda_in = [f.to(CUDA).requires_grad_() for f in feats]
    cpu_out = multilevel_roi_align(cpu_in, rois, levels, 7, scales, 2, aligned)
    cuda_out = multilevel_roi_align(cuda_in, rois.to(CUDA), levels.to(CUDA), 7, scales, 2, aligned)
    torch.testing.assert_close(cuda_out.cpu(), cpu_out)
    cpu_grads = torch.autograd.grad(cpu_out, cpu_in, grad)
    cuda_grads = torch.autograd.grad(cuda_out, cuda_in, grad.to(CUDA))
    for a, b in zip(cuda_grads, cpu_grads):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-5)  # CUDA's backward adds atomically


def _tiny_fpn_cfg(tmp_path, **extra):
    settings = {"model.backbone.features": "fpn", "model.backbone.fpn_channels": 32,
                "model.anchors.sizes": [[16.0], [32.0], [64.0], [128.0], [256.0]], "data.min_size": [128],
                "data.max_size": 160, "data.synthetic.image_size": 128, **extra}
    return load_config(None, tiny_overrides(tmp_path, **settings))


def test_detector_eval_outputs_parity_on_the_same_weights(tmp_path):
    cfg = _tiny_fpn_cfg(tmp_path, **{"model.roi_head.score_thresh": 0.0, "model.roi_head.detections_per_img": 30})
    torch.manual_seed(0)
    model = build_detector(cfg, num_classes=3).eval()
    images = [torch.rand(3, 128, 160, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.inference_mode():
        cpu_features = model.backbone(model.preprocess(images)[0])
        cpu_dets = model(images)
    model.to(CUDA)  # outside inference mode: the parameters stay ordinary tensors
    with torch.inference_mode():
        cuda_features = model.backbone(model.preprocess([im.to(CUDA) for im in images])[0])
        cuda_dets = model([im.to(CUDA) for im in images])
    for name in cpu_features:
        torch.testing.assert_close(cuda_features[name].cpu(), cpu_features[name], rtol=1e-4, atol=1e-4)
    from torchvision.ops import box_iou

    for cpu, cuda in zip(cpu_dets, cuda_dets):
        assert cuda["boxes"].device.type == "cuda" and cpu["boxes"].shape[0] > 0
        # NMS and top-k may flip on near-equal scores of a random model: most detections must agree
        # (same label, IoU > 0.99, score within 1e-4), and the counts nearly so.
        iou = box_iou(cpu["boxes"], cuda["boxes"].cpu())
        same = ((iou > 0.99) & (cpu["labels"][:, None] == cuda["labels"].cpu()[None, :])
                & ((cpu["scores"][:, None] - cuda["scores"].cpu()[None, :]).abs() < 1e-4))
        assert float(same.any(dim=1).float().mean()) >= 0.9
        assert abs(cpu["boxes"].shape[0] - cuda["boxes"].shape[0]) <= max(2, cpu["boxes"].shape[0] // 10)


def _train(tmp_path, name, **extra):
    from detkit.engine.trainer import Trainer

    cfg = _tiny_fpn_cfg(tmp_path, **{"train.max_iters": 3, "output.dir": str(tmp_path / name),
                                     "eval.precise_bn_batches": 2, **extra})
    metrics = Trainer(cfg, quiet=True, log=lambda *_: None).run()
    records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return metrics, [r for r in records if r["type"] == "train"]


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_amp_training_on_cuda_then_cpu_evaluation(tmp_path, precision):
    from detkit.deploy.predictor import load_model
    from detkit.evaluation.evaluate import evaluate_checkpoint

    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    metrics, train_records = _train(tmp_path, "gpu", **{"train.device": "cuda", "train.precision": precision,
                                                        "train.cudnn_benchmark": True})
    assert [r["iteration"] for r in train_records] == [1, 2, 3]
    assert all(np.isfinite(r[k]) for r in train_records for k in ("loss", "loss_rpn_cls", "loss_roi_reg"))
    assert "coco" in metrics
    ckpt = tmp_path / "gpu" / "last.pt"
    on_cpu = evaluate_checkpoint(str(ckpt), device="cpu", output_dir=str(tmp_path), progress=False,
                                 log=lambda *_: None)
    assert on_cpu["num_images"] == 4
    found = load_model(str(ckpt), device="cpu", log=lambda *_: None).predict(np.zeros((96, 128, 3), np.uint8))
    assert found["boxes"].shape[1] == 4


def test_cpu_checkpoint_evaluates_and_predicts_on_cuda(tmp_path):
    from detkit.deploy.predictor import load_model
    from detkit.evaluation.evaluate import evaluate_checkpoint

    _train(tmp_path, "cpu", **{"train.precision": "fp32"})
    ckpt = str(tmp_path / "cpu" / "last.pt")
    args = {"output_dir": str(tmp_path), "progress": False, "log": lambda *_: None,
            "overrides": ["eval.precision=fp32"]}
    on_cuda = evaluate_checkpoint(ckpt, device="cuda", **args)
    on_cpu = evaluate_checkpoint(ckpt, device="cpu", **args)
    assert on_cuda["num_images"] == on_cpu["num_images"] == 4
    assert abs(on_cuda["coco"]["mAP"] - on_cpu["coco"]["mAP"]) < 0.05
    predictor = load_model(ckpt, device="cuda", log=lambda *_: None)
    assert next(predictor.model.parameters()).device.type == "cuda"
    assert predictor.predict(np.zeros((96, 128, 3), np.uint8))["boxes"].shape[1] == 4


def test_torchrun_one_process_over_nccl_with_sync_bn(tmp_path):
    from detkit.weights.checkpoint import load_checkpoint
    from tests.engine.test_distributed import DDP_SETTINGS, torchrun

    settings = {**DDP_SETTINGS, "model.backbone.norm": "sync_bn", "train.device": "cuda", "train.max_iters": 3,
                "data.synthetic.cache_dir": str(tmp_path / "synthetic"), "output.dir": str(tmp_path / "nccl")}
    proc = torchrun(1, tiny_overrides(tmp_path, **settings), timeout=300)
    assert "4 per process x 1 process(es) = 4 global" in proc.stdout
    assert load_checkpoint(tmp_path / "nccl" / "last.pt")["iteration"] == 3
