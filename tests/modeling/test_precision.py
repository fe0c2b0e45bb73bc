"""Reduced precision and memory layout in the model: bf16 autocast and channels_last against fp32 contiguous.

Tolerances. bf16 keeps 8 significant bits (a relative rounding of 2^-9 = 0.2% per value); a ResNet-18
forward pass rounds activations and weights at every one of its ~20 convolutions, so the per-value
difference of deep features is a few percent while sums over many values (losses) average it down.
The RPN losses compare the same anchors, assignment and sampled anchors (they depend on the ground
truth only), so they differ by the logits' rounding alone: 2% relative. The RoI losses see proposals
that bf16 may order differently (near-tied objectness at initialisation), hence other sampled RoIs:
10%. Gradients are compared by direction (cosine similarity), the quantity SGD follows.
channels_last changes only the summation order of the fp32 convolutions: 1e-4 relative on losses and
features, gradient directions within 5e-4.
"""

import copy

import pytest
import torch

from detkit.modeling.detector import build_detector
from detkit.modeling.geometry_dtype import geometry_dtype, to_geometry

from .test_detector import K, light_config, synthetic_images


def _fpn_model(memory_format="contiguous", seed=0):
    cfg = light_config("fpn")
    cfg.model.memory_format = memory_format
    torch.manual_seed(seed)
    return build_detector(cfg, num_classes=K, log=lambda *_: None)


def _losses_and_grads(model, images, targets, dtype=None, grad_of=None):
    """The four losses, and the gradients of the sum of ``grad_of`` (default: all) losses."""
    model.train()
    model.load_rng_state_dict(_RNG_STATE)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        losses = model(images, targets)
    sum(v for k, v in losses.items() if grad_of is None or k in grad_of).backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


_RNG_STATE = None


@pytest.fixture(scope="module")
def batch():
    global _RNG_STATE
    images, targets = synthetic_images(2, size=128, seed=3)
    _RNG_STATE = _fpn_model().rng_state_dict()
    return images, targets


def _cosine(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def test_geometry_dtype_keeps_float32_and_float64():
    assert geometry_dtype(torch.bfloat16) == torch.float32 and geometry_dtype(torch.float16) == torch.float32
    assert geometry_dtype(torch.float64) == torch.float64
    t = torch.ones(3)
    assert to_geometry(t) is t


def test_bf16_channels_last_losses_and_gradients_close_to_fp32(batch):
    images, targets = batch
    reference = _fpn_model("contiguous")
    fast = _fpn_model("channels_last")
    fast.load_state_dict(reference.state_dict())
    ref_losses, ref_grads = _losses_and_grads(reference, images, targets)
    losses, grads = _losses_and_grads(fast, images, targets, torch.bfloat16)
    for name, value in losses.items():
        assert value.dtype == torch.float32, name  # losses are computed in float32 under autocast
        assert torch.isfinite(value), name
        tol = 0.02 if name.startswith("loss_rpn") else 0.10
        assert abs(float(value) - float(ref_losses[name])) <= tol * abs(float(ref_losses[name])) + 1e-4, (
            name, float(value), float(ref_losses[name]))
    for name, grad in grads.items():
        assert grad.dtype == torch.float32 and torch.isfinite(grad).all(), name  # fp32 master gradients
    # Gradient directions, from the RPN losses (whose sampled anchors are the same in both runs).
    rpn = ("loss_rpn_cls", "loss_rpn_reg")
    _, ref_grads = _losses_and_grads(reference, images, targets, grad_of=rpn)
    _, grads = _losses_and_grads(fast, images, targets, torch.bfloat16, grad_of=rpn)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        if grad.dim() > 1:
            # Measured 0.93 at the stem (the rounding of ~20 bf16 layers backpropagated), 1.0 in the heads.
            floor = 0.99 if name.startswith(("rpn.", "backbone.fpn.")) else 0.85
            assert _cosine(grad, ref_grads[name]) > floor, name


def test_bf16_eval_keeps_anchors_proposals_and_detections_in_float32(batch):
    images, _ = batch
    model = _fpn_model("channels_last").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        detections = model(images)
        batch_tensor, sizes = model.preprocess(images)
        features = model.backbone(batch_tensor)
        assert all(f.dtype == torch.bfloat16 for f in features.values())  # autocast is on
        proposals, _ = model.rpn(list(features.values()), sizes)
    # Decoded in float32: bf16 would round coordinates near 128 px to 0.5-pixel steps.
    assert all(p.dtype == torch.float32 and p.shape[0] > 0 for p in proposals)
    assert any(bool((p.frac() * 4).frac().abs().gt(1e-3).any()) for p in proposals)
    anchors, _ = model.rpn.anchors([tuple(f.shape[-2:]) for f in features.values()], torch.float32, torch.device("cpu"))
    assert anchors.dtype == torch.float32
    for det in detections:
        assert det["boxes"].dtype == torch.float32 and det["scores"].dtype == torch.float32


def test_channels_last_equals_contiguous_in_fp32(batch):
    images, targets = batch
    contiguous = _fpn_model("contiguous")
    channels_last = _fpn_model("channels_last")
    channels_last.load_state_dict(contiguous.state_dict())
    assert channels_last.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert channels_last.preprocess(images)[0].is_contiguous(memory_format=torch.channels_last)
    rpn = ("loss_rpn_cls", "loss_rpn_reg")  # the RoI losses' proposals may break near-ties differently
    a, ga = _losses_and_grads(contiguous, images, targets, grad_of=rpn)
    b, gb = _losses_and_grads(channels_last, images, targets, grad_of=rpn)
    for name in rpn:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)
    for name in ga:
        # The reordered float32 sums differ by up to ~1% of an entry in the stem (BatchNorm's backward
        # subtracts near-equal means); the direction agrees to 1e-4 (measured 0.99996).
        assert _cosine(gb[name], ga[name]) > 0.9995, name
    contiguous.eval(), channels_last.eval()
    with torch.no_grad():
        fa = contiguous.backbone(contiguous.preprocess(images)[0])
        fb = channels_last.backbone(channels_last.preprocess(images)[0])
    for name in fa:
        torch.testing.assert_close(fb[name], fa[name], rtol=1e-4, atol=1e-5, msg=name)


def test_state_dicts_load_across_memory_formats():
    a = _fpn_model("channels_last", seed=1)
    b = _fpn_model("contiguous", seed=2)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(pb, pa, rtol=0, atol=0, msg=name)
    assert b.backbone.body.conv1.weight.is_contiguous()  # the target keeps its own layout
