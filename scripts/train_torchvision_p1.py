"""Train the reference: torchvision's Faster R-CNN under protocol P1, on any data set detkit reads.

The question a user asks of a training recipe is "does it beat what I would otherwise run, on my
data?". This script answers the other half: it trains

    FasterRCNN(resnet_fpn_backbone('resnet18', weights=None, trainable_layers=5), num_classes=K + 1,
               min_size=data.min_size[-1], max_size=data.max_size)

(the P1 reference of ``benchmarks/results/bccd_p1.md``) with P1's optimiser and schedule from the
config (``configs/bccd_r18_fpn.yaml``: SGD lr 0.02, momentum 0.9, weight decay 1e-4, batch 2, 12
epochs, 200 warm-up iterations, x0.1 at 75% and 92%), in fp32, on detkit's data pipeline (the same
samples, horizontal flip and resize as a detkit run of that config), and evaluates it with detkit's
COCO evaluation on the config's validation split every ``train.eval_every`` epochs and at the end.

    python -m scripts.train_torchvision_p1 --config configs/bccd_r18_fpn.yaml --output-dir runs/tv_p1 \
        [--data-from my_recipe.yaml] [key=value ...]

``--data-from`` takes the data *source* of another config (format, splits, paths, classes, the
handling of flawed files) and keeps P1's resize and augmentation, so that the reference trains and
evaluates on exactly the images a recipe run of that config used.

The run folder holds metrics.jsonl in the trainer's record format (train / epoch / eval records), so
``p1_report.py`` reads it and ``recipe_report.py --reference-run`` draws its curve, plus eval.json (the
final evaluation) and last.pt (torchvision's state dict, the config and the classes).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time

import torch
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

from detkit.config import apply_overrides, config_from_dict, config_to_dict, load_config, save_config
from detkit.data.formats import build_dataset
from detkit.data.loader import build_loader
from detkit.engine.hooks.base import Evaluation
from detkit.engine.hooks.records import eval_record
from detkit.engine.optim import build_scheduler
from detkit.evaluation.evaluator import evaluate_detections, write_json
from detkit.weights.checkpoint import save_checkpoint


def build_reference(num_classes: int, min_size: int, max_size: int, seed: int) -> FasterRCNN:
    """torchvision's P1 model, from random initialisation (``num_classes`` without background)."""
    torch.manual_seed(seed)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    return FasterRCNN(backbone, num_classes=num_classes + 1, min_size=min_size, max_size=max_size)


@torch.inference_mode()
def evaluate(model: FasterRCNN, dataset, cfg) -> dict:
    """COCO and VOC metrics of ``model`` on ``dataset`` (detkit's test preset and evaluator).

    detkit's loader has already resized each image to the test size, which torchvision's transform
    keeps (same rule, scale 1); its boxes come back in those pixels and are scaled to the original."""
    model.eval()
    loader = build_loader(cfg, "val", dataset=dataset, batch_size=cfg.eval.batch_size, shuffle=False)
    detections = {}
    for images, targets in loader:
        for target, out in zip(targets, model(images)):
            sy, sx = target["scale"]
            boxes = out["boxes"] / torch.tensor([sx, sy, sx, sy], dtype=out["boxes"].dtype)
            detections[int(target["image_id"])] = {"boxes": boxes, "scores": out["scores"],
                                                   "labels": out["labels"]}
    model.train()
    annotations = [dataset.get_annotation(i) for i in range(len(dataset))]
    aligned = [detections[int(a["image_id"])] for a in annotations]
    metrics, _ = evaluate_detections(annotations, aligned, dataset.classes, dataset.category_ids,
                                     backend=cfg.eval.backend)
    return metrics


class RecordLog:
    """metrics.jsonl: one JSON record per line, the file started afresh."""

    def __init__(self, path: str) -> None:
        self.path = path
        open(path, "w", encoding="utf-8").close()

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def train(cfg, out: str, log=print) -> dict:
    started = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    train_set = build_dataset(cfg, "train")
    val_set = build_dataset(cfg, "val", classes=train_set.classes)
    loader = build_loader(cfg, "train", dataset=train_set)
    model = build_reference(len(train_set.classes), cfg.data.min_size[-1], cfg.data.max_size, cfg.train.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.train.lr, momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay)
    total_iters = cfg.train.epochs * len(loader)
    scheduler = build_scheduler(optimizer, cfg.train, total_iters)
    save_config(cfg, os.path.join(out, "config.yaml"))
    records = RecordLog(os.path.join(out, "metrics.jsonl"))
    log(f"torchvision P1 reference: {len(train_set)} training / {len(val_set)} validation images, "
        f"classes {list(train_set.classes)}, {total_iters} iterations")
    iteration, metrics = 0, None
    for epoch in range(cfg.train.epochs):
        loader.set_epoch(epoch)
        tic, seen = time.perf_counter(), 0
        for images, targets in loader:
            losses = model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise SystemExit(f"non-finite loss at iteration {iteration + 1}: "
                                 f"{ {k: float(v) for k, v in losses.items()} }")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            iteration, seen = iteration + 1, seen + len(images)
            if iteration % cfg.train.log_every == 0 or iteration == 1:
                records.write({"type": "train", "epoch": epoch + 1, "iteration": iteration,
                               "lr": optimizer.param_groups[0]["lr"], "time": time.time(),
                               "img_per_s": seen / (time.perf_counter() - tic),
                               **{k: float(v.detach()) for k, v in losses.items()}, "loss": float(loss.detach())})
        seconds = time.perf_counter() - tic
        records.write({"type": "epoch", "epoch": epoch + 1, "iteration": iteration, "time": time.time(),
                       "seconds": seconds, "img_per_s": seen / seconds})
        log(f"epoch {epoch + 1}/{cfg.train.epochs}: {seen / seconds:.2f} img/s, {seconds:.0f} s")
        last = epoch + 1 == cfg.train.epochs
        if last or (cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0):
            metrics = evaluate(model, val_set, cfg)
            records.write(eval_record(Evaluation(epoch=epoch + 1, iteration=iteration, metrics=metrics, results=[],
                                                  improved=False)))
            coco = metrics["coco"]
            log(f"eval at epoch {epoch + 1}: mAP {coco['mAP']:.4f}  AP50 {coco['AP50']:.4f}  AP75 {coco['AP75']:.4f}")
    write_json(metrics, os.path.join(out, "eval.json"))
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg), "classes": list(train_set.classes)},
                    os.path.join(out, "last.pt"))  # atomic; torchvision's state dict, not a detkit model
    log(f"wall time {(time.perf_counter() - started) / 60:.2f} min (set-up, training, evaluations); outputs in {out}")
    return metrics


# P1 fixes these data keys (the protocol's resolution and augmentation); --data-from copies the others.
PROTOCOL_DATA_KEYS = ("min_size", "max_size", "test_min_size", "augment", "aspect_ratio_grouping")


def with_data_source(cfg, source):
    """``cfg`` with every data key of ``source`` except P1's resize and augmentation."""
    for f in dataclasses.fields(source.data):
        if f.name not in PROTOCOL_DATA_KEYS:
            setattr(cfg.data, f.name, copy.deepcopy(getattr(source.data, f.name)))
    return cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/bccd_r18_fpn.yaml")
    parser.add_argument("--output-dir", default="runs/tv_p1")
    parser.add_argument("--data-from", default=None, help="a config whose data source (not resize or "
                        "augmentation) replaces the P1 config's")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, [f"output.dir={args.output_dir}"])
    if args.data_from:
        cfg = with_data_source(cfg, load_config(args.data_from))
    if args.overrides:  # last, so that they win over --data-from
        cfg = config_from_dict(apply_overrides(config_to_dict(cfg), list(args.overrides)))
    train(cfg, args.output_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
