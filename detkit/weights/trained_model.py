"""A trained detector back from its checkpoint: the model its config builds, ready to serve.

    model, cfg, ckpt = load_trained_model("runs/synthetic/best.pt")
    precision = prepare_inference(model, cfg, device)   # eval mode, BatchNorm folded, eval.precision
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from detkit.config import Config, config_from_dict
from detkit.errors import CheckpointError, ConfigError
from detkit.modeling.anchors import resolve_anchor_shapes
from detkit.modeling.detector import build_detector
from detkit.modeling.fold_bn import fold_batch_norm
from detkit.runtime.precision import Precision, resolve_precision
from detkit.weights.checkpoint import load_checkpoint, load_weights

__all__ = ["load_trained_model", "prepare_inference"]


def load_trained_model(checkpoint_path: str, device: torch.device = torch.device("cpu"),
                       overrides: Optional[list] = None,
                       weights: str = "model") -> tuple[torch.nn.Module, Config, dict]:
    """Rebuild the detector a checkpoint was trained as (its config, classes and anchor shapes).

    ``overrides`` (``dotted.key=value``) change inference settings such as the score threshold.
    ``weights`` picks the checkpoint's entry: "model" (the weights the trainer evaluated: the moving
    average when ``train.ema_decay`` was on) or "train_model" (the trained weights themselves, saved
    only beside a moving average; their BatchNorm statistics are training's running averages).
    Returns (model in eval mode, config, checkpoint dict).
    """
    from detkit.config import apply_overrides

    if weights not in ("model", "train_model"):
        raise ValueError(f"weights={weights!r}: choose 'model' or 'train_model'")
    ckpt = load_checkpoint(checkpoint_path)
    if weights not in ckpt:
        raise CheckpointError(f"checkpoint '{checkpoint_path}' has no '{weights}' weights: only a run with "
                              f"train.ema_decay saves its trained weights apart from the evaluated 'model' "
                              f"(here 'model' already holds the trained weights)")
    shapes = resolve_anchor_shapes(checkpoint=ckpt["anchor_shapes"])
    try:
        data = apply_overrides(ckpt["config"], list(overrides or []))
        data.setdefault("model", {}).setdefault("anchors", {})["shapes"] = shapes  # what the model trained with
        cfg = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"checkpoint '{checkpoint_path}': {exc}") from None
    model = build_detector(cfg, num_classes=len(ckpt["classes"]), anchor_shapes=shapes)
    load_weights(model, ckpt[weights], checkpoint_path, what="the model its config builds")
    return model.to(device).eval(), cfg, ckpt


def prepare_inference(model: torch.nn.Module, cfg: Config, device: torch.device, *,
                      log: Callable[[str], None] = print) -> Precision:
    """The last steps before a trained detector serves (evaluation tool, inference tool, Python API):
    eval mode, BatchNorm folded into the convolutions when ``eval.fold_bn`` (in place; do it after any
    precise-BN refresh), and ``eval.precision`` resolved for ``device``. Returns that precision."""
    model.eval()
    if cfg.eval.fold_bn:
        fold_batch_norm(model)
    return resolve_precision(cfg.eval.precision, device, key="eval.precision", log=log)
