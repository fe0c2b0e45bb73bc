"""Inference time per image on the CPU: torchvision eager against detkit eager, TorchScript and ONNX Runtime.

    python -m benchmarks.bench_export [--checkpoint runs/bccd_r18_fpn/best.pt] [--images 16] [--blocks 5]
                                      [--size 320,427] [--threads 2] [--json out.json]

Every model runs on the same BCCD images (../shared/data/BCCD, test split; RGB uint8 as read from
disk) at one size, P1's by default (shorter side 320, longer side at most 427, whatever test size the
checkpoint was trained for: ``--size`` sets data.test_min_size and data.max_size for detkit's models
and min_size / max_size for torchvision's), one image per call, including each model's own resize
and post-processing:

  tv_eager          torchvision's FasterRCNN, ResNet-18 FPN, fp32, as a user runs it (random weights:
                    no download; its own GeneralizedRCNNTransform resizes the float image)
  detkit_fp32       detkit's Predictor in fp32 (BatchNorm folded), the reference of the exported files
  detkit_auto       detkit's Predictor with eval.precision auto (bf16 where the CPU has it) and
                    channels_last, as tools/infer.py runs a checkpoint by default
  detkit_ts         the same checkpoint exported to TorchScript (tools/export.py), fp32
  detkit_onnx       the same checkpoint exported to ONNX, run by ONNX Runtime's CPU provider, fp32

Without --checkpoint the P1 config's detector is built with seeded random weights (a detector that
was not trained finds other boxes, so post-processing costs differ a little from a trained one's).
Every detkit model runs one pass with hard NMS (``model.test_hflip=false``, ``model.test_scales=[1.0]``,
``model.roi_head.nms_method=hard``), as the exported graphs do, whatever the checkpoint's config says.
Models rotate their order every block; each block times every model over all images; the figure
is the median over blocks of the mean seconds per image. Ratios are against tv_eager in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Callable, Dict, List, Tuple

import numpy as np
import torch

from detkit.config import config_to_dict, load_config
from detkit.data.image_io import read_image
from detkit.deploy.export import export_checkpoint
from detkit.deploy.exported_model import load_exported
from detkit.deploy.predictor import load_model
from detkit.modeling.detector import build_detector
from detkit.weights.checkpoint import save_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BCCD = os.path.join(REPO, "..", "shared", "data", "BCCD")
P1_CONFIG = os.path.join(REPO, "configs", "bccd_r18_fpn.yaml")
BCCD_CLASSES = ["Platelets", "RBC", "WBC"]


def bccd_images(count: int) -> List[np.ndarray]:
    """The first ``count`` images of BCCD's test split (RGB uint8)."""
    split = os.path.join(BCCD, "ImageSets", "Main", "test.txt")
    if not os.path.isfile(split):
        raise SystemExit(f"BCCD not found at {os.path.normpath(BCCD)} (expected ImageSets/Main/test.txt)")
    with open(split) as f:
        ids = [line.split()[0] for line in f if line.strip()][:count]
    return [read_image(os.path.join(BCCD, "JPEGImages", f"{i}.jpg")) for i in ids]


SINGLE_PASS = ["model.test_hflip=false", "model.test_scales=[1.0]", "model.roi_head.nms_method=hard"]


def random_p1_checkpoint(folder: str, seed: int) -> str:
    """A checkpoint of the P1 detector with seeded random weights (what --checkpoint would hold)."""
    cfg = load_config(P1_CONFIG, ["data.classes=[Platelets,RBC,WBC]"])
    torch.manual_seed(seed)
    model = build_detector(cfg, len(BCCD_CLASSES), log=lambda s: None)
    cfg.model.anchors.shapes = model.rpn.anchor_generator.shapes_list()
    path = os.path.join(folder, "p1_random.pt")
    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg), "classes": BCCD_CLASSES,
                     "category_ids": [1, 2, 3], "anchor_shapes": cfg.model.anchors.shapes}, path)
    return path


def torchvision_detector(seed: int, min_size: int, max_size: int) -> Callable[[np.ndarray], object]:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(seed)
    backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5)
    model = FasterRCNN(backbone, num_classes=len(BCCD_CLASSES) + 1, min_size=min_size,
                       max_size=max_size).eval()

    def detect(image: np.ndarray):
        with torch.inference_mode():
            x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float().div_(255)  # HWC uint8 -> CHW in [0, 1]
            return model([x])
    return detect


def parse_size(text: str) -> Tuple[int, int]:
    """"320,427" -> (320, 427): the shorter side and the cap on the longer side of the test resize."""
    try:
        shorter, longest = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected SHORTER,LONGEST in pixels, e.g. 320,427")
    if not 0 < shorter <= longest:
        raise argparse.ArgumentTypeError(f"--size {text!r}: need 0 < SHORTER <= LONGEST")
    return shorter, longest


def time_blocks(models: Dict[str, Callable], images: List[np.ndarray], blocks: int) -> Dict[str, List[float]]:
    """Per model, the mean seconds per image of each block; the order rotates every block."""
    names = list(models)
    out = {n: [] for n in names}
    for b in range(blocks):
        for n in names[b % len(names):] + names[:b % len(names)]:
            t0 = time.perf_counter()
            for image in images:
                models[n](image)
            out[n].append((time.perf_counter() - t0) / len(images))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="a detkit checkpoint (default: the P1 detector with random weights)")
    p.add_argument("--size", default="320,427", type=parse_size,
                   help="SHORTER,LONGEST test resize for every model (default P1's 320,427)")
    p.add_argument("--images", type=int, default=16, help="BCCD test images per block")
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per model first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = bccd_images(args.images)
    quiet = lambda s: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or random_p1_checkpoint(tmp, args.seed)
        # one pass and hard NMS for every detkit model: the exported graphs compute no flip test-time
        # augmentation or soft-NMS (the recipe's config has both), and eager must run what they run
        size = [f"data.test_min_size={args.size[0]}", f"data.max_size={args.size[1]}", *SINGLE_PASS]
        for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
            export_checkpoint(checkpoint, fmt, os.path.join(tmp, name), overrides=size, verify=False, log=quiet)
        fp32 = load_model(checkpoint, overrides=size + ["eval.precision=fp32", "model.memory_format=contiguous"],
                          log=quiet)
        auto = load_model(checkpoint, overrides=size + ["eval.precision=auto"], log=quiet)
        ts = load_exported(os.path.join(tmp, "model.pt"))
        onnx = load_exported(os.path.join(tmp, "model.onnx"), num_threads=args.threads)
        models = {"tv_eager": torchvision_detector(args.seed, *args.size), "detkit_fp32": fp32.predict,
                  "detkit_auto": auto.predict, "detkit_ts": ts.detect, "detkit_onnx": onnx.detect}
        for fn in models.values():
            for image in images[: args.warmup]:
                fn(image)
        times = time_blocks(models, images, args.blocks)
        # the resize each detkit model applied (a lost override would show here, not only in the timing)
        used = {"detkit_fp32": fp32, "detkit_auto": auto}
        test_size = {n: [int(m.transform.min_sizes[0]), int(m.transform.max_size)] for n, m in used.items()}
        test_size.update({n: [int(m.metadata["test_min_size"]), int(m.metadata["max_size"])]
                          for n, m in (("detkit_ts", ts), ("detkit_onnx", onnx))})
    median = {n: statistics.median(t) for n, t in times.items()}
    result = {"images": len(images), "blocks": args.blocks, "threads": args.threads, "size": list(args.size),
              "detkit_test_size": test_size, "detkit_overrides": size,
              "checkpoint": os.path.basename(args.checkpoint) if args.checkpoint else "random P1 weights",
              "auto_precision": str(auto.precision.name if auto.precision else "fp32"),
              "seconds_per_image": median, "ratio_to_tv_eager": {n: median[n] / median["tv_eager"] for n in median},
              "blocks_seconds": times}
    print(f"{len(images)} BCCD test images resized to {args.size[0]} (longer side <= {args.size[1]}), "
          f"{args.threads} threads, {args.blocks} blocks "
          f"(detkit_auto = {result['auto_precision']}); checkpoint: {result['checkpoint']}")
    print(f"{'model':<13}{'s / image':>11}{'/ tv_eager':>12}")
    for n in models:
        print(f"{n:<13}{median[n]:>11.4f}{result['ratio_to_tv_eager'][n]:>11.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
