"""Loader throughput (images/s) on BCCD with the train preset, at num_workers 0 and 2.

Usage:
    python -m benchmarks.bench_data [--config configs/bccd_r18_fpn.yaml] [--epochs 1]
                                    [--workers 0 2] [--out benchmarks/results/bench_data.json]

Two presets are timed: the config's own train preset, and a full one (horizontal + vertical
flip, bbox-safe crop, colour jitter, scale jitter 0.8..1.2) to show what augmentation costs.
Each measurement iterates whole epochs of the training loader (decode, augment, resize,
collate to float tensors) after one warm-up batch; numbers are from this one process run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

import torch

from detkit.config import load_config
from detkit.data.formats import build_dataset
from detkit.data.loader import build_loader


def time_loader(cfg, dataset, *, num_workers: int, epochs: int) -> dict:
    loader = build_loader(cfg, "train", dataset=dataset, num_workers=num_workers)
    next(iter(loader))  # warm-up: worker start-up, first decode
    loader.set_epoch(0)
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for batch_images, _targets in loader:
            images += len(batch_images)
    seconds = time.perf_counter() - start
    return {"num_workers": num_workers, "images": images, "seconds": round(seconds, 3),
            "images_per_s": round(images / seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/bccd_r18_fpn.yaml")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", default="benchmarks/results/bench_data.json")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    full = copy.deepcopy(cfg)
    a = full.data.augment
    a.hflip_prob, a.vflip_prob, a.crop_prob, a.color_jitter_prob, a.scale_jitter = 0.5, 0.5, 0.5, 0.5, [0.8, 1.2]
    dataset = build_dataset(cfg, "train", log_report=False)
    torch.set_num_threads(1)
    results = []
    print(f"{len(dataset)} training images, min_size {cfg.data.min_size}, max_size {cfg.data.max_size}, "
          f"batch {cfg.train.batch_size}, {os.cpu_count()} CPUs")
    print(f"{'preset':<8} {'workers':>7} {'images':>7} {'seconds':>8} {'images/s':>9}")
    for preset, c in (("config", cfg), ("full", full)):
        for workers in args.workers:
            r = {"preset": preset, **time_loader(c, dataset, num_workers=workers, epochs=args.epochs)}
            results.append(r)
            print(f"{preset:<8} {workers:>7} {r['images']:>7} {r['seconds']:>8.2f} {r['images_per_s']:>9.1f}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"benchmark": "bench_data", "config": args.config, "python": sys.version.split()[0],
                       "machine": platform.machine(), "cpus": os.cpu_count(), "results": results}, f, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
