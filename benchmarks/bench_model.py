"""detkit's detector vs torchvision's FasterRCNN (ResNet-18 FPN, random init), one process, same input.

For each model: training step time per image (forward + backward + SGD step) and inference time
per image (eval mode, ``torch.inference_mode``), measured in alternating blocks after warm-up (so
machine drift hits every model alike; the median block is reported), plus the share of the
time spent in anchor generation + anchor/proposal matching + NMS, measured in separate
instrumented steps (wall-clock timers around those calls, so the main timings carry no overhead).
On a shared machine the load changes from minute to minute: besides each model's median time, the
table gives the median over blocks of the per-block ratio (each block runs every model back to
back, so a ratio compares runs made seconds apart), with its range.

Models (each as ``<name>_fp32`` or ``<name>_fast``, benchmarks/bench_variants.py: fp32 contiguous, or bf16
autocast + channels_last with detkit's inference BatchNorm folded; a plain name is the fp32 one):
  detkit     build_detector(Config()) with ResNet-18 FPN, trainable BatchNorm, torchvision's RPN/RoI settings.
  tv         FasterRCNN(resnet_fpn_backbone(backbone_name='resnet18', weights=None, trainable_layers=5),
             num_classes=K+1, min_size, max_size): the issue 9 reference. Note that resnet_fpn_backbone's
             default norm_layer is FrozenBatchNorm2d, so this backbone has no working normalisation.
  tv_bn      the same with norm_layer=nn.BatchNorm2d (BatchNorm trainable, as detkit's default).

The input is a fixed batch of synthetic images (noise plus painted rectangles, boxes as targets)
already at the network resolution, identical for every model.

    python -m benchmarks.bench_model [--batch 2] [--height 320] [--width 427] [--blocks 8] [--iters 1]
                                     [--warmup 2] [--threads N] [--json FILE]
                                     [--models detkit_fp32,detkit_fast,tv_fp32,tv_fast]
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import time
from typing import Callable, Dict, List

import numpy as np
import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

import detkit.modeling.roi_head as dk_roi_head
import detkit.modeling.rpn as dk_rpn
from benchmarks.bench_variants import DEFAULT_VARIANTS, make_variants, refresh_inference_model
from detkit.atomic_io import write_json_atomic
from detkit.config import Config
from detkit.modeling.detector import build_detector


def make_batch(batch: int, height: int, width: int, num_classes: int, seed: int):
    """Noise images with 8..16 painted rectangles each; targets hold those rectangles."""
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(batch):
        img = rng.uniform(0.3, 0.7, size=(3, height, width)).astype(np.float32)
        boxes = []
        for _ in range(int(rng.integers(8, 17))):
            w, h = rng.uniform(16, 120, size=2)
            w, h = min(w, 0.75 * width), min(h, 0.75 * height)  # a small test image still holds its boxes
            x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            img[:, int(y1):int(y1 + h), int(x1):int(x1 + w)] = rng.uniform(0, 1, size=(3, 1, 1))
            boxes.append([x1, y1, x1 + w, y1 + h])
        images.append(torch.from_numpy(img))
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.from_numpy(rng.integers(1, num_classes + 1, size=len(boxes)))})
    return images, targets


def model_builder(num_classes: int, height: int, width: int, seed: int) -> Callable[[str], nn.Module]:
    """model family -> a fresh fp32 contiguous model, seeded alike."""
    def build(name: str) -> nn.Module:
        torch.manual_seed(seed)
        if name == "detkit":
            return build_detector(Config(), num_classes, log=lambda s: None)
        if name in ("tv", "tv_bn"):
            kwargs = {"norm_layer": nn.BatchNorm2d} if name == "tv_bn" else {}
            backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5, **kwargs)
            return FasterRCNN(backbone, num_classes=num_classes + 1, min_size=min(height, width),
                              max_size=max(height, width))
        raise SystemExit(f"unknown model {name!r}; choose from detkit, tv, tv_bn (+ _fp32, _fp32cl or _fast)")
    return build


def make_steps(variant, images, targets):
    model = variant.train_model
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9,
                          weight_decay=1e-4)

    def train_step():
        model.train()
        with variant.autocast():
            losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer():
        variant.infer_model.eval()
        with torch.inference_mode(), variant.autocast():
            return variant.infer_model(images)

    return train_step, infer


def time_alternating(fns: Dict[str, Callable], blocks: int, iters: int) -> Dict[str, List[float]]:
    """Per model, the mean seconds per call of each block; models rotate their order every block."""
    names = list(fns)
    out = {n: [] for n in names}
    for b in range(blocks):
        order = names[b % len(names):] + names[:b % len(names)]
        for n in order:
            t0 = time.perf_counter()
            for _ in range(iters):
                fns[n]()
            out[n].append((time.perf_counter() - t0) / iters)
    return out


@contextlib.contextmanager
def patched(targets):
    """targets: list of (object, attribute name, wrapper factory); restores the originals on exit."""
    saved = []
    try:
        for obj, attr, wrap in targets:
            orig = getattr(obj, attr)
            saved.append((obj, attr, orig, attr in vars(obj)))
            setattr(obj, attr, wrap(orig))
        yield
    finally:
        for obj, attr, orig, own in reversed(saved):
            if own:
                setattr(obj, attr, orig)
            else:
                delattr(obj, attr)


def timer(acc: Dict[str, float], key: str):
    def wrap(fn):
        def inner(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[key] += time.perf_counter() - t0
        return inner
    return wrap


def box_ops_targets(base: str, model: nn.Module, acc: Dict[str, float]):
    """The calls that count as anchor generation / matching / NMS in each implementation."""
    if base == "detkit":
        return [(model.rpn, "anchors", timer(acc, "anchors")),
                (model.rpn.assigner, "assign", timer(acc, "matching")),
                (model.roi_head.assigner, "assign", timer(acc, "matching")),
                (dk_rpn, "batched_nms", timer(acc, "nms")),
                (dk_roi_head, "batched_nms", timer(acc, "nms"))]
    return [(model.rpn.anchor_generator, "forward", timer(acc, "anchors")),
            (model.rpn, "assign_targets_to_anchors", timer(acc, "matching")),
            (model.roi_heads, "assign_targets_to_proposals", timer(acc, "matching")),
            (torchvision.ops.boxes, "batched_nms", timer(acc, "nms"))]


def box_ops_share(name: str, model: nn.Module, fn: Callable, iters: int) -> Dict[str, float]:
    acc = {"anchors": 0.0, "matching": 0.0, "nms": 0.0}
    with patched(box_ops_targets(name, model, acc)):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        total = time.perf_counter() - t0
    out = {k: v / total for k, v in acc.items()}
    out["total"] = sum(acc.values()) / total
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--width", type=int, default=427)
    p.add_argument("--num-classes", type=int, default=3, help="K without background (BCCD: 3)")
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--iters", type=int, default=1, help="calls per block")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--models", default=DEFAULT_VARIANTS,
                   help="any of detkit, tv, tv_bn, each optionally with _fp32, _fp32cl or _fast")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    images, targets = make_batch(args.batch, args.height, args.width, args.num_classes, args.seed)
    variants = make_variants(names, model_builder(args.num_classes, args.height, args.width, args.seed))
    steps = {n: make_steps(v, images, targets) for n, v in variants.items()}
    for n in names:  # warm-up (Numba JIT, allocator, oneDNN primitives)
        for _ in range(args.warmup):
            steps[n][0]()
    train = time_alternating({n: s[0] for n, s in steps.items()}, args.blocks, args.iters)
    for v in variants.values():  # the folded inference copies get the trained weights
        refresh_inference_model(v)
        for _ in range(args.warmup):
            steps[v.name][1]()
    infer = time_alternating({n: s[1] for n, s in steps.items()}, args.blocks, args.iters)
    rows = []
    for n in names:
        detections = steps[n][1]()
        rows.append({
            "model": n,
            "train_s_per_img": statistics.median(train[n]) / args.batch,
            "infer_s_per_img": statistics.median(infer[n]) / args.batch,
            "train_blocks_s": train[n], "infer_blocks_s": infer[n],
            "train_box_ops_share": box_ops_share(variants[n].base, variants[n].train_model, steps[n][0], args.iters),
            "infer_box_ops_share": box_ops_share(variants[n].base, variants[n].infer_model, steps[n][1], args.iters),
            "detections_per_img": float(np.mean([len(d["boxes"]) for d in detections])),
        })
    ref = next((n for n in ("tv_fp32", "tv", "detkit") if n in train), names[0])
    for r in rows:
        for kind, blocks in (("train", train), ("infer", infer)):
            ratios = [t / d for t, d in zip(blocks[r["model"]], blocks[ref])]
            r[f"{kind}_ratio_to_{ref}"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, threads {torch.get_num_threads()}, "
          f"batch {args.batch} at {args.height}x{args.width}, {args.blocks} blocks x {args.iters} calls")
    print(f"{'model':12s} {'train s/img':>12s} {'infer s/img':>12s} {'train / ' + ref + ' [range]':>26s} "
          f"{'infer / ' + ref + ' [range]':>26s} {'box ops % train':>16s} {'box ops % infer':>16s}")
    for r in rows:
        tr, inf = r["train_box_ops_share"], r["infer_box_ops_share"]
        rt, ri = r[f"train_ratio_to_{ref}"], r[f"infer_ratio_to_{ref}"]
        print(f"{r['model']:12s} {r['train_s_per_img']:12.3f} {r['infer_s_per_img']:12.3f} "
              f"{rt['median']:10.2f} [{rt['min']:.2f}, {rt['max']:.2f}]{'':5s} "
              f"{ri['median']:10.2f} [{ri['min']:.2f}, {ri['max']:.2f}]{'':5s} "
              f"{100 * tr['total']:15.1f}% {100 * inf['total']:15.1f}%")
        print(f"{'':12s} train: anchors {100 * tr['anchors']:.2f}%, matching {100 * tr['matching']:.2f}%, "
              f"nms {100 * tr['nms']:.2f}%; infer: anchors {100 * inf['anchors']:.2f}%, nms {100 * inf['nms']:.2f}%")
    result = {"config": vars(args), "torch": torch.__version__, "torchvision": torchvision.__version__,
              "threads": torch.get_num_threads(), "machine": platform.machine(), "rows": rows}
    if args.json:
        write_json_atomic(result, args.json, indent=2)
    return result


if __name__ == "__main__":
    main()
