"""Protocol P1 speed on real data: detkit vs torchvision's FasterRCNN on BCCD, one process, same batches.

Both models have the P1 architecture and resolution (ResNet-18 FPN from random initialisation,
shorter side 320, longer side at most 427, 3 classes + background):

  detkit  build_detector(configs/bccd_r18_fpn.yaml)
  tv      FasterRCNN(resnet_fpn_backbone('resnet18', weights=None, trainable_layers=5), num_classes=4,
          min_size=320, max_size=427)  — the reference of issue 9

Training: the same pre-loaded BCCD training batches (detkit's P1 loader: horizontal flip, resize;
data loading is excluded, it is shared code), SGD steps in alternating blocks so that machine drift
hits both models; images/s per block and the median ratio. Inference: seconds per test image at
batch 1 (eval mode, torch.inference_mode), alternating blocks likewise.

    python benchmarks/bench_train.py [--config configs/bccd_r18_fpn.yaml] [--blocks 4] [--iters 3]
                                     [--infer-images 8] [--warmup 2] [--threads N] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time

import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detkit.atomic_io import write_json_atomic  # noqa: E402
from detkit.config import load_config  # noqa: E402
from detkit.data.loader import build_dataset, build_loader  # noqa: E402
from detkit.modeling.detector import build_detector  # noqa: E402


def build_models(cfg, num_classes: int) -> dict:
    torch.manual_seed(cfg.train.seed)
    detkit_model = build_detector(cfg, num_classes, log=lambda s: None)
    torch.manual_seed(cfg.train.seed)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    tv_model = FasterRCNN(backbone, num_classes=num_classes + 1, min_size=cfg.data.min_size[-1],
                          max_size=cfg.data.max_size)
    return {"detkit": detkit_model, "tv": tv_model}


def make_train_step(model, batches, lr: float):
    """A callable running one SGD step on the next pre-loaded batch; returns the images it used."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                          weight_decay=1e-4)
    stream = itertools.cycle(batches)

    def step() -> int:
        images, targets = next(stream)
        model.train()
        losses = model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return len(images)

    return step


def make_infer_step(model, images):
    stream = itertools.cycle(images)

    def step() -> int:
        model.eval()
        with torch.inference_mode():
            model([next(stream)])
        return 1

    return step


def alternate(steps: dict, blocks: int, iters: int) -> dict:
    """Per model and block: seconds per image; the model order rotates every block."""
    names, out = list(steps), {n: [] for n in steps}
    for b in range(blocks):
        for n in names[b % len(names):] + names[:b % len(names)]:
            t0, count = time.perf_counter(), 0
            for _ in range(iters):
                count += steps[n]()
            out[n].append((time.perf_counter() - t0) / count)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/bccd_r18_fpn.yaml")
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--iters", type=int, default=3, help="training steps per block")
    p.add_argument("--infer-images", type=int, default=8, help="test images per inference block")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    train_set = build_dataset(cfg, "train")
    val_set = build_dataset(cfg, "val", classes=train_set.classes)
    loader = build_loader(cfg, "train", dataset=train_set)
    batches = list(itertools.islice(iter(loader), args.blocks * args.iters + args.warmup))
    test_loader = build_loader(cfg, "val", dataset=val_set, batch_size=1)
    test_images = [imgs[0] for imgs, _ in itertools.islice(iter(test_loader), args.infer_images)]
    models = build_models(cfg, len(train_set.classes))
    train_steps = {n: make_train_step(m, batches, lr=1e-3) for n, m in models.items()}
    infer_steps = {n: make_infer_step(m, test_images) for n, m in models.items()}
    for n in models:  # warm-up: Numba JIT, allocator, oneDNN primitives
        for _ in range(args.warmup):
            train_steps[n]()
            infer_steps[n]()
    train = alternate(train_steps, args.blocks, args.iters)
    infer = alternate(infer_steps, args.blocks, args.infer_images)
    train_ratio = [t / d for t, d in zip(train["tv"], train["detkit"])]  # detkit img/s over tv img/s
    infer_ratio = [d / t for t, d in zip(infer["tv"], infer["detkit"])]  # detkit s/img over tv s/img
    result = {
        "config": args.config, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "machine": platform.machine(),
        "train_img_per_s": {n: 1.0 / statistics.median(v) for n, v in train.items()},
        "infer_s_per_img": {n: statistics.median(v) for n, v in infer.items()},
        "train_speed_ratio_detkit_over_tv": statistics.median(train_ratio),
        "infer_time_ratio_detkit_over_tv": statistics.median(infer_ratio),
        "train_blocks_s_per_img": train, "infer_blocks_s_per_img": infer,
    }
    print(f"BCCD P1, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} threads, {args.blocks} blocks")
    print(f"{'model':8s} {'train img/s':>12s} {'infer s/img':>12s}")
    for n in models:
        print(f"{n:8s} {result['train_img_per_s'][n]:12.3f} {result['infer_s_per_img'][n]:12.3f}")
    print(f"training speed detkit / torchvision: {result['train_speed_ratio_detkit_over_tv']:.2f}x "
          f"(blocks {min(train_ratio):.2f}..{max(train_ratio):.2f}; target >= 1.1)")
    print(f"inference time detkit / torchvision: {result['infer_time_ratio_detkit_over_tv']:.2f} "
          f"(blocks {min(infer_ratio):.2f}..{max(infer_ratio):.2f}; target <= 0.9)")
    if args.json:
        write_json_atomic(result, args.json, indent=2)
    return result


if __name__ == "__main__":
    main()
