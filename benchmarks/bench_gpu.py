"""detkit vs torchvision's fasterrcnn_resnet50_fpn on one GPU, at COCO size, with AMP on both.

Models (random weights, nothing downloaded):
  detkit  build_detector on configs/coco_r50_fpn.yaml's model (ResNet-50 FPN, trainable BatchNorm,
          torchvision's RPN / RoI settings, channels_last as configured), 80 classes.
  tv      torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
          num_classes=81, the same 80 classes + background): with no pretrained backbone torchvision
          trains every stage with BatchNorm.

Input: synthetic COCO-like batches (noise with painted rectangles, about 7 boxes per image, classes
1..80) already at the network size (shorter side 800, longer side up to 1333), the same tensors for
both models; torchvision's own transform still runs (it resizes to the same size and normalises).

Measured, in one process (ratios are detkit / torchvision, measured in the same run):
  training img/s   forward + backward + SGD step under autocast (fp16 with a GradScaler, or bf16)
  inference img/s  eval mode, torch.inference_mode, autocast; batch 1 and batch --batch
  peak memory      torch.cuda.max_memory_allocated of a training phase with only that model on the GPU
Timing is in alternating blocks (the models take turns, the order flips every block; the median
block is reported, with the median of the per-block ratios), each block closed by cuda.synchronize.
Targets (issue 19): training and inference ratios >= 1.2, peak memory ratio <= 1.0.

Where CUDA is unavailable the script says so and exits 0 (status "skipped" in --json); ``--device cpu
--smoke`` runs every code path on tiny inputs on the CPU (fp32, figures meaningless) for CI.

    python -m benchmarks.bench_gpu [--batch 8] [--blocks 5] [--iters 4] [--warmup 3] [--precision fp16|bf16]
                                   [--min-size 800] [--max-size 1333] [--json FILE] [--device cpu --smoke]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import numpy as np
import torch

from detkit.atomic_io import write_json_atomic
from detkit.config import load_config
from detkit.modeling.detector import build_detector
from detkit.runtime.device import cuda_unavailable_reason

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_CLASSES = 80
MODELS = ("detkit", "tv")


def make_batches(count: int, batch: int, min_size: int, max_size: int, seed: int, device):
    """``count`` batches of COCO-like images: shorter side min_size, longer side in [4/3, 5/3] x that
    (at most max_size), one size per batch; 4..10 rectangles (mean 7) per image as targets."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        long_side = min(max_size, int(min_size * rng.uniform(4 / 3, 5 / 3)))
        h, w = (min_size, long_side) if rng.uniform() < 0.8 else (long_side, min_size)  # mostly landscape
        images, targets = [], []
        for _ in range(batch):
            img = torch.from_numpy(rng.uniform(0.3, 0.7, (3, h, w)).astype(np.float32))
            boxes = []
            for _ in range(int(rng.integers(4, 11))):
                bw, bh = np.exp(rng.uniform(np.log(16), np.log(0.6 * min(h, w)), 2))
                x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
                img[:, int(y1):int(y1 + bh), int(x1):int(x1 + bw)] = torch.from_numpy(rng.uniform(0, 1, (3, 1, 1)))
                boxes.append([x1, y1, x1 + bw, y1 + bh])
            images.append(img.to(device))
            targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
                            "labels": torch.from_numpy(rng.integers(1, NUM_CLASSES + 1, len(boxes))).to(device)})
        out.append((images, targets))
    return out


def build_model(name: str, args, device) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "detkit":
        cfg = load_config(os.path.join(REPO, "configs", "coco_r50_fpn.yaml"))
        if args.smoke:
            cfg.model.backbone.depth = 18
        return build_detector(cfg, num_classes=NUM_CLASSES, log=lambda *_: None).to(device)
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=NUM_CLASSES + 1,
                                   min_size=args.min_size, max_size=args.max_size).to(device)


class Runner:
    """One model's training step and inference call under the benchmark's autocast."""

    def __init__(self, model: torch.nn.Module, args, device) -> None:
        self.model, self.device = model, device
        self.dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}[args.precision]
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "fp16")

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def train_step(self, images, targets) -> None:
        self.model.train()
        with self.autocast():
            losses = self.model(images, targets)
        loss = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    @torch.inference_mode()
    def infer(self, images) -> None:
        self.model.eval()
        with self.autocast():
            self.model(images)


def _progress(message: str) -> None:
    """A line on stderr per phase, so that a run cut short by a time limit still shows what it measured."""
    print(f"bench_gpu: {message}", file=sys.stderr, flush=True)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_training_memory(name: str, args, device, batches) -> Dict[str, float]:
    """Peak bytes of a training phase with only this model on the GPU (None on the CPU)."""
    if device.type != "cuda":
        return {"peak_gib": None}
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    runner = Runner(build_model(name, args, device), args, device)
    for images, targets in batches[: max(2, args.warmup)]:
        runner.train_step(images, targets)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
    del runner
    torch.cuda.empty_cache()
    return {"peak_gib": peak}


def alternate(tasks: Dict[str, Callable[[], int]], blocks: int, device) -> Dict[str, List[float]]:
    """Run each task once per block (order flipped every block); images per second per block."""
    rates: Dict[str, List[float]] = {name: [] for name in tasks}
    names = list(tasks)
    for block in range(blocks):
        for name in (names if block % 2 == 0 else names[::-1]):
            _sync(device)
            tic = time.perf_counter()
            images = tasks[name]()
            _sync(device)
            rates[name].append(images / (time.perf_counter() - tic))
    return rates


def summarise(rates: Dict[str, List[float]]) -> dict:
    ratios = [a / b for a, b in zip(rates["detkit"], rates["tv"])]
    return {"detkit_img_s": statistics.median(rates["detkit"]), "tv_img_s": statistics.median(rates["tv"]),
            "ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)],
            "blocks": {k: [round(v, 3) for v in r] for k, r in rates.items()}}


def run(args) -> dict:
    device = torch.device(args.device)
    if args.smoke:
        args.min_size, args.max_size, args.batch = min(args.min_size, 96), min(args.max_size, 128), 2
        args.blocks, args.iters, args.warmup = 1, 1, 1
    batches = make_batches(args.iters + max(2, args.warmup), args.batch, args.min_size, args.max_size, 0, device)
    _progress("peak memory, one model on the device at a time")
    memory = {name: peak_training_memory(name, args, device, batches) for name in MODELS}
    _progress(f"peak training memory GiB: {memory}")
    runners = {name: Runner(build_model(name, args, device), args, device) for name in MODELS}
    for runner in runners.values():  # warm-up: cuDNN / allocator / Numba compilation out of the timings
        for images, targets in batches[: args.warmup]:
            runner.train_step(images, targets)
            runner.infer(images)
            runner.infer(images[:1])
    timed = batches[-args.iters:]

    def train_task(r):
        return lambda: sum(r.train_step(im, t) or len(im) for im, t in timed)

    def infer_task(r, n):
        return lambda: sum(r.infer(im[:n]) or len(im[:n]) for im, _ in timed)

    result = {"status": "measured", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "precision": args.precision, "batch": args.batch,
              "min_size": args.min_size, "max_size": args.max_size, "blocks": args.blocks, "iters": args.iters,
              "smoke": bool(args.smoke)}
    _progress("training blocks")
    result["train"] = summarise(alternate({n: train_task(r) for n, r in runners.items()}, args.blocks, device))
    _progress(f"training img/s: {result['train']['blocks']}")
    for n in (1, args.batch):
        result[f"infer_batch{n}"] = summarise(alternate({m: infer_task(r, n) for m, r in runners.items()},
                                                        args.blocks, device))
        _progress(f"inference batch {n} img/s: {result[f'infer_batch{n}']['blocks']}")
    result["memory"] = {name: memory[name]["peak_gib"] for name in MODELS}
    if device.type == "cuda":
        result["memory"]["ratio"] = memory["detkit"]["peak_gib"] / memory["tv"]["peak_gib"]
    measured = device.type == "cuda" and not args.smoke  # a smoke run's figures say nothing
    result["targets"] = {"train_ratio>=1.2": result["train"]["ratio"] >= 1.2 if measured else None,
                         **{f"infer_batch{n}_ratio>=1.2": result[f"infer_batch{n}"]["ratio"] >= 1.2 if measured
                            else None for n in (1, args.batch)},
                         "memory_ratio<=1.0": result["memory"]["ratio"] <= 1.0 if measured else None}
    return result


def report(result: dict) -> str:
    lines = [f"bench_gpu on {result['device']} (torch {result['torch']}, {result['precision']}, batch "
             f"{result['batch']}, shorter side {result['min_size']}, longer <= {result['max_size']})"
             + ("  [SMOKE RUN: figures meaningless]" if result["smoke"] else ""),
             f"{'':18}{'detkit':>12}{'torchvision':>14}{'ratio':>8}  (range over blocks)"]
    for key, label in (("train", "training img/s"), ("infer_batch1", "inference b1 img/s"),
                       (f"infer_batch{result['batch']}", f"inference b{result['batch']} img/s")):
        r = result[key]
        lines.append(f"{label:18}{r['detkit_img_s']:12.2f}{r['tv_img_s']:14.2f}{r['ratio']:8.2f}  "
                     f"({r['ratio_range'][0]:.2f} .. {r['ratio_range'][1]:.2f})")
    m = result["memory"]
    if m.get("ratio") is not None:
        lines.append(f"{'peak memory GiB':18}{m['detkit']:12.2f}{m['tv']:14.2f}{m['ratio']:8.2f}")
    lines.append("targets: " + ", ".join(f"{k} {'met' if v else 'NOT met' if v is not None else 'n/a'}"
                                         for k, v in result["targets"].items()))
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (with --smoke)")
    p.add_argument("--smoke", action="store_true", help="tiny inputs, every code path once (CI on the CPU)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--min-size", type=int, default=800)
    p.add_argument("--max-size", type=int, default=1333)
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--iters", type=int, default=4, help="batches per block")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", choices=("fp16", "bf16", "fp32"), default=None,
                   help="autocast of both models (default fp16 on CUDA, fp32 on the CPU)")
    p.add_argument("--json", help="write the results (or the reason nothing was measured) here")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and cuda_unavailable_reason() is not None:
        reason = f"CUDA is unavailable ({cuda_unavailable_reason()}); nothing measured"
        print(f"bench_gpu: {reason}. For a CPU smoke run of the code paths: --device cpu --smoke")
        if args.json:
            write_json_atomic({"status": "skipped", "reason": reason}, args.json)
        return 0
    if device.type == "cpu" and not args.smoke:
        print("bench_gpu: --device cpu is a smoke run only; add --smoke", file=sys.stderr)
        return 2
    args.precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    result = run(args)
    print(report(result))
    if args.json:
        write_json_atomic(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
