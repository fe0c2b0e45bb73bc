"""A run that learns something in seconds on a CPU: a detector memorising 8 synthetic 64-pixel images.

Shared by the tests that need a model that has learned (tests/engine/test_trainer_learns.py,
tests/engine/test_eval_outputs.py, tests/deploy/test_infer_drawing.py). The validation split is the
training split itself (COCO format pointed at the synthetic set's training files), so a few
hundred images' worth of steps give a model whose metrics are far from an untrained one's;
the built-in synthetic validation split needs much longer runs for that (a from-scratch ResNet-18
reaches mAP 0.06 on it after 320 steps on 64 training images).
"""

from __future__ import annotations

from pathlib import Path

from detkit.config import SyntheticConfig, load_config
from detkit.data.synthetic import prepare_synthetic
from detkit.engine.trainer import Trainer

IMAGE_SIZE = 48  # the synthetic images' side
INPUT_SIZE = 64  # the network's: training and evaluation scale the images by 4/3 and map boxes back


def synthetic_train_files(cache_dir: Path, *, num_images: int = 8, max_objects: int = 3) -> tuple[str, str]:
    """(COCO JSON, image folder) of the training split of a small built-in synthetic set."""
    cfg = SyntheticConfig(cache_dir=str(cache_dir), num_train=num_images, num_val=1, image_size=IMAGE_SIZE,
                          max_objects=max_objects)
    return prepare_synthetic(cfg)["train"]


def memorise_config(tmp: Path, *, num_images: int = 8, max_objects: int = 3, **extra):
    """The config of the run: fp32 (the same numbers on any CPU), train.seed 0, output in tmp/run."""
    ann_file, img_dir = synthetic_train_files(tmp / "synthetic", num_images=num_images, max_objects=max_objects)
    values = {
        "data.format": "coco",
        "data.train.ann_file": ann_file,
        "data.train.img_dir": img_dir,
        "data.val.ann_file": ann_file,
        "data.val.img_dir": img_dir,
        "data.classes": "[circle, square, triangle]",
        "data.min_size": [INPUT_SIZE],
        "data.max_size": INPUT_SIZE,
        "model.backbone.features": "c4",
        "model.anchors.sizes": [[16.0, 32.0]],
        "model.anchors.ratios": [0.5, 1.0, 2.0],
        "model.rpn.pre_nms_top_n_train": 100,
        "model.rpn.post_nms_top_n_train": 50,
        "model.rpn.pre_nms_top_n_test": 100,
        "model.rpn.post_nms_top_n_test": 50,
        "model.roi_head.batch_size_per_image": 32,
        "model.roi_head.fc_dim": 64,
        "train.epochs": 80,  # 8 images / batch 4: 160 steps
        "train.batch_size": 4,
        "train.lr": 0.02,
        "train.warmup_iters": 10,
        "train.eval_every": 0,
        "train.log_every": 10,
        "train.precision": "fp32",
        "train.seed": 0,
        "eval.precision": "fp32",
        "eval.batch_size": 4,
        "output.dir": str(tmp / "run"),
        "output.plots": "false",
    }
    values.update(extra)
    return load_config(None, [f"{k}={v}" for k, v in values.items()])


def train_memorised_run(tmp: Path):
    """Train the default memorising run in ``tmp/run``; returns (its config, the final metrics).

    Used through the session fixture ``memorised_run`` (tests/engine/conftest.py), so that the tests that
    only read the trained run share one training (about 13 s on a 2-core CPU).
    """
    cfg = memorise_config(tmp)
    metrics = Trainer(cfg, quiet=True, log=lambda *_: None).run()
    return cfg, metrics
