"""A trained detector back from its checkpoint: the model its config builds, ready to serve.

    model, cfg, ckpt = load_trained_model("runs/synthetic/best.pt")
    precision = prepare_inference(model, cfg, device)   # eval mode, BatchNorm folded, eval.precision

    # several checkpoints of the same classes: one DetectorEnsemble (detkit.modeling.ensemble)
    model, cfg, ckpt = load_trained_models(["runs/a/best.pt", "runs/b/best.pt"])
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional, Sequence, Union

import torch

from detkit.config import Config, config_from_dict
from detkit.errors import CheckpointError, ConfigError
from detkit.hub import PREFIX as TORCHVISION_PREFIX
from detkit.modeling.anchors import resolve_anchor_shapes
from detkit.modeling.detector import build_detector
from detkit.modeling.ensemble import DetectorEnsemble
from detkit.modeling.fold_bn import fold_batch_norm
from detkit.runtime.precision import Precision, resolve_precision
from detkit.safe_load import load_torch_file
from detkit.weights.checkpoint import REQUIRED_KEYS, load_checkpoint, load_weights

__all__ = ["checkpoint_paths", "load_trained_model", "load_trained_models", "prepare_inference"]


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
    source = os.fspath(checkpoint_path)
    raw = None if source.startswith(TORCHVISION_PREFIX) else load_torch_file(source, "checkpoint")
    if raw is None or not (isinstance(raw, dict) and all(k in raw for k in REQUIRED_KEYS)):
        if raw is not None and (not _looks_like_state_dict(raw) or _holds_detkit_model(raw)):
            load_checkpoint(source)  # raises what is wrong with it as a checkpoint
        if weights != "model":
            raise CheckpointError(f"'{source}' is not a detkit checkpoint: it has no '{weights}' weights")
        from detkit.weights.pretrained_model import load_torchvision_detector

        return load_torchvision_detector(source, device, overrides)
    ckpt = raw
    if weights not in ckpt:
        if "optimizer" not in ckpt:  # best.pt or evaluated/epoch_NNN.pt: the evaluated weights alone
            raise CheckpointError(f"checkpoint '{checkpoint_path}' has no '{weights}' weights: it keeps the "
                                  f"evaluated 'model' alone, as best.pt does; a train.ema_decay run's trained "
                                  f"weights are in its last.pt")
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


def checkpoint_paths(checkpoints: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> List[str]:
    """One checkpoint path, or a list of them (an ensemble) -> the list of paths.

    >>> checkpoint_paths("runs/a/best.pt"), checkpoint_paths(["a.pt", "b.pt"])
    (['runs/a/best.pt'], ['a.pt', 'b.pt'])
    """
    if isinstance(checkpoints, (str, os.PathLike)):
        return [os.fspath(checkpoints)]
    return [os.fspath(p) for p in checkpoints]


def load_trained_models(checkpoints: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                        device: torch.device = torch.device("cpu"),
                        overrides: Optional[list] = None,
                        weights: str = "model") -> tuple[torch.nn.Module, Config, dict]:
    """:func:`load_trained_model` for one checkpoint (a path, or a list of one); for several, the
    :class:`DetectorEnsemble` of their detectors, each rebuilt from its own checkpoint with the same ``overrides``.

    The first checkpoint's config and dict are returned: its data set, evaluation and post-processing
    settings (score threshold, NMS, detections per image) are the ensemble's; each member keeps its own
    test-time views. Raises CheckpointError when the checkpoints' classes (or their order) differ, and
    ConfigError when their test-time resizes do.
    """
    paths = checkpoint_paths(checkpoints)
    if not paths:
        raise CheckpointError("no checkpoint given: name one, or several for an ensemble")
    if len(paths) == 1:
        return load_trained_model(paths[0], device, overrides, weights=weights)
    if len(set(paths)) != len(paths):
        repeated = sorted({p for p in paths if paths.count(p) > 1})
        raise CheckpointError(f"checkpoint {repeated[0]!r} is given twice: an ensemble's members are different "
                              f"checkpoints")
    members, first_cfg, first_ckpt = [], None, None
    for path in paths:
        model, cfg, ckpt = load_trained_model(path, device, overrides, weights=weights)
        if first_ckpt is None:
            first_cfg, first_ckpt = cfg, ckpt
        elif list(ckpt["classes"]) != list(first_ckpt["classes"]):
            raise CheckpointError(f"checkpoint '{path}' detects the classes {list(ckpt['classes'])} but "
                                  f"'{paths[0]}' detects {list(first_ckpt['classes'])}: an ensemble's members "
                                  f"must detect the same classes in the same order")
        members.append(model)
    try:
        ensemble = DetectorEnsemble(members)
    except ValueError as exc:  # member N's test resize differs: name the files
        raise ConfigError(f"checkpoints {', '.join(repr(p) for p in paths)}: {exc}") from None
    return ensemble.to(device).eval(), first_cfg, first_ckpt


def prepare_inference(model: torch.nn.Module, cfg: Config, device: torch.device, *,
                      log: Callable[[str], None] = print) -> Precision:
    """The last steps before a trained detector serves (evaluation tool, inference tool, Python API):
    eval mode, BatchNorm folded into the convolutions when ``eval.fold_bn`` (in place; do it after any
    precise-BN refresh), and ``eval.precision`` resolved for ``device``. Returns that precision."""
    model.eval()
    if cfg.eval.fold_bn:
        fold_batch_norm(model)
    return resolve_precision(cfg.eval.precision, device, key="eval.precision", log=log)


def _looks_like_state_dict(obj) -> bool:
    """A dict of tensors, or one wrapped under a usual entry: maybe torchvision weights, not a broken checkpoint."""
    if not isinstance(obj, dict):
        return False
    inner = next((obj[e] for e in ("model", "state_dict", "model_state_dict") if isinstance(obj.get(e), dict)), obj)
    return bool(inner) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in inner.items())


def _holds_detkit_model(obj: dict) -> bool:
    """A dict whose "model" has detkit's tensor names: a detkit checkpoint, perhaps incomplete."""
    model = obj.get("model")
    return isinstance(model, dict) and any(isinstance(k, str) and k.startswith("roi_head.") for k in model)
