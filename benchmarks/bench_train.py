"""Protocol P1 speed on real data: detkit vs torchvision's FasterRCNN on BCCD, one process, same batches.

Both models have the P1 architecture and resolution (ResNet-18 FPN from random initialisation,
shorter side 320, longer side at most 427, 3 classes + background):

  detkit  build_detector(configs/bccd_r18_fpn.yaml)
  tv      FasterRCNN(resnet_fpn_backbone('resnet18', weights=None, trainable_layers=5), num_classes=4,
          min_size=320, max_size=427)  — the reference of issue 9

each in the variants of benchmarks/bench_variants.py: fp32 contiguous (``_fp32``), and bf16 autocast +
channels_last (``_fast``; detkit's fast inference also folds BatchNorm), or fp32 with channels_last
(``_fp32cl``: what ``model.memory_format: auto`` trains fp32 in on an AVX-512 CPU).

Training: the same pre-loaded BCCD training batches (detkit's P1 loader: horizontal flip, resize;
data loading is excluded, it is shared code), SGD steps in alternating blocks so that machine drift
hits every variant; images/s per block and the median of the per-block ratios. Inference: seconds per
test image at batch 1 (eval mode, torch.inference_mode), alternating blocks likewise.
``--profile`` then prints where a detkit training step's time goes in each of its variants
(detkit/engine/step_profile.py), data loading from the real loader included.

    python -m benchmarks.bench_train [--config configs/bccd_r18_fpn.yaml] [--blocks 4] [--iters 3]
                                     [--infer-images 8] [--warmup 2] [--threads N] [--json FILE]
                                     [--variants detkit_fp32,detkit_fast,tv_fp32,tv_fast] [--profile]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import statistics
import time

import torch
import torchvision
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from benchmarks.bench_variants import DEFAULT_VARIANTS, make_variants, refresh_inference_model
from detkit.atomic_io import write_json_atomic
from detkit.config import load_config
from detkit.data.formats import build_dataset
from detkit.data.loader import build_loader
from detkit.engine.step_profile import StepProfiler
from detkit.modeling.detector import build_detector
from detkit.runtime.cpu import cpu_model, describe_cpu


def model_builder(cfg, num_classes: int):
    """base name -> a fresh fp32 contiguous model of that family, seeded alike."""
    def build(base: str):
        torch.manual_seed(cfg.train.seed)
        if base == "detkit":
            return build_detector(cfg, num_classes, log=lambda s: None)
        if base == "tv":
            backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
            return FasterRCNN(backbone, num_classes=num_classes + 1, min_size=cfg.data.min_size[-1],
                              max_size=cfg.data.max_size)
        raise SystemExit(f"unknown model family {base!r}: choose detkit or tv")
    return build


def config_from_args(args):
    """The Config of ``--config`` with the ``key=value`` overrides, after setting ``--threads``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_config(args.config, args.overrides)


def training_batches(cfg, count: int):
    """(training set, its loader, its first ``count`` batches): pre-loaded, so data loading is not timed."""
    train_set = build_dataset(cfg, "train")
    loader = build_loader(cfg, "train", dataset=train_set)
    return train_set, loader, list(itertools.islice(iter(loader), count))


def make_train_step(variant, batches, lr: float):
    """A callable running one SGD step on the next pre-loaded batch; returns the images it used."""
    model = variant.train_model
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                          weight_decay=1e-4)
    stream = itertools.cycle(batches)

    def step() -> int:
        images, targets = next(stream)
        model.train()
        with variant.autocast():
            losses = model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return len(images)

    return step


def make_infer_step(variant, images):
    stream = itertools.cycle(images)

    def step() -> int:
        model = variant.infer_model
        model.eval()
        with torch.inference_mode(), variant.autocast():
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


# (numerator, denominator, target or None): training compares img/s, inference compares s/img.
TRAIN_COMPARISONS = (("detkit_fp32", "tv_fp32", 1.1), ("detkit_fast", "tv_fp32", 2.5), ("detkit_fast", "tv_fast", 1.5),
                     ("detkit_fast", "detkit_fp32", None), ("tv_fast", "tv_fp32", None),
                     ("detkit_fp32", "detkit_fp32cl", None))
INFER_COMPARISONS = (("detkit_fp32", "tv_fp32", 0.9), ("detkit_fast", "tv_fp32", 0.4), ("detkit_fast", "tv_fast", None),
                     ("detkit_fast", "detkit_fp32", None), ("tv_fast", "tv_fp32", None),
                     ("detkit_fp32", "detkit_fp32cl", None))


def block_ratios(blocks: dict, a: str, b: str, speed: bool) -> list:
    """Per block, a over b: img/s (speed) or s/img; blocks hold s/img."""
    return [(tb / ta) if speed else (ta / tb) for ta, tb in zip(blocks[a], blocks[b])]


def profile_detkit(variant, loader, steps: int, lr: float) -> str:
    """The StepProfiler table of ``steps`` training steps of a detkit variant, data from ``loader``."""
    model = variant.train_model
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9,
                          weight_decay=1e-4)
    stream = iter(loader)
    model.train()
    with StepProfiler(model) as prof:
        for _ in range(steps):
            with prof.part("data"):
                try:
                    images, targets = next(stream)
                except StopIteration:
                    stream = iter(loader)
                    images, targets = next(stream)
            losses = prof.forward(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets],
                                  autocast=variant.autocast())
            loss = sum(losses.values())
            with prof.part("backward"):
                opt.zero_grad(set_to_none=True)
                loss.backward()
            with prof.part("optimizer"):
                opt.step()
            prof.end_step()
    return prof.table(f"{variant.name}: where a training step's time goes")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/bccd_r18_fpn.yaml")
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--iters", type=int, default=3, help="training steps per block")
    p.add_argument("--infer-images", type=int, default=8, help="test images per inference block")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variants", default=DEFAULT_VARIANTS, help=f"comma-separated (default {DEFAULT_VARIANTS})")
    p.add_argument("--profile", action="store_true", help="then print where detkit's step time goes per variant")
    p.add_argument("--profile-steps", type=int, default=6)
    p.add_argument("--json", default=None)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)
    cfg = config_from_args(args)
    train_set, loader, batches = training_batches(cfg, args.blocks * args.iters + args.warmup)
    val_set = build_dataset(cfg, "val", classes=train_set.classes)
    test_loader = build_loader(cfg, "val", dataset=val_set, batch_size=1)
    test_images = [imgs[0] for imgs, _ in itertools.islice(iter(test_loader), args.infer_images)]
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    variants = make_variants(names, model_builder(cfg, len(train_set.classes)))
    train_steps = {n: make_train_step(v, batches, lr=1e-3) for n, v in variants.items()}
    infer_steps = {n: make_infer_step(v, test_images) for n, v in variants.items()}
    for n in variants:  # warm-up: Numba JIT, allocator, oneDNN primitives
        for _ in range(args.warmup):
            train_steps[n]()
    train = alternate(train_steps, args.blocks, args.iters)
    for v in variants.values():  # the folded inference copies get the trained weights
        refresh_inference_model(v)
        for _ in range(args.warmup):
            infer_steps[v.name]()
    infer = alternate(infer_steps, args.blocks, args.infer_images)
    result = {
        "config": args.config, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "machine": platform.machine(), "cpu": describe_cpu(),
        "variants": names,
        "train_img_per_s": {n: 1.0 / statistics.median(v) for n, v in train.items()},
        "infer_s_per_img": {n: statistics.median(v) for n, v in infer.items()},
        "train_blocks_s_per_img": train, "infer_blocks_s_per_img": infer, "ratios": [],
    }
    # The ratio to torchvision depends on the CPU's bf16 path (AVX512-BF16 or AMX): say which CPU gave it.
    print(f"BCCD P1, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} threads, {args.blocks} blocks; cpu: {result['cpu']}")
    print(f"{'variant':12s} {'train img/s':>12s} {'infer s/img':>12s}")
    for n in names:
        print(f"{n:12s} {result['train_img_per_s'][n]:12.3f} {result['infer_s_per_img'][n]:12.3f}")
    for kind, comparisons, blocks, speed in (("training speed", TRAIN_COMPARISONS, train, True),
                                             ("inference time", INFER_COMPARISONS, infer, False)):
        for a, b, target in comparisons:
            if a not in blocks or b not in blocks:
                continue
            ratios = block_ratios(blocks, a, b, speed)
            median = statistics.median(ratios)
            met = None if target is None else (median >= target if speed else median <= target)
            result["ratios"].append({"kind": kind, "a": a, "b": b, "median": median, "min": min(ratios),
                                     "max": max(ratios), "target": target, "met": met})
            goal = "" if target is None else f"; target {'>=' if speed else '<='} {target} " \
                f"{'met' if met else 'NOT met'}"
            print(f"{kind} {a} / {b}: {median:.2f}{'x' if speed else ''} "
                  f"(blocks {min(ratios):.2f}..{max(ratios):.2f}{goal}) [{cpu_model()}]")
    if args.profile:
        result["profile"] = {}
        for v in variants.values():
            if v.base == "detkit":
                table = profile_detkit(v, loader, args.profile_steps, lr=1e-3)
                result["profile"][v.name] = table
                print(table)
    if args.json:
        write_json_atomic(result, args.json, indent=2)
    return result


if __name__ == "__main__":
    main()
