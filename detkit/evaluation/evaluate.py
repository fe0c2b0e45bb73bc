"""Evaluating a detector: over a data set split in memory, or a checkpoint on a named split."""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional, Sequence, Union

import torch
from tqdm import tqdm

from detkit.config import Config
from detkit.errors import CheckpointError, ConfigError
from detkit.evaluation.evaluator import evaluate_detections
from detkit.runtime.device import resolve_device
from detkit.runtime.precision import Precision, autocast_of
from detkit.weights.trained_model import checkpoint_paths, load_trained_models, prepare_inference

__all__ = ["run_evaluation", "evaluate_checkpoint"]


@torch.inference_mode()
def run_evaluation(model: torch.nn.Module, dataset, cfg: Config, device: torch.device,
                   progress: bool = True, precision: Optional[Precision] = None) -> tuple[dict, list]:
    """Detect on every image of ``dataset`` (test preset), score with COCO and VOC metrics.

    ``precision``: the autocast the forward passes run under (None = fp32).

    The validation loss (the four loss terms on the same images) is reported as ``val_loss``.
    Returns (metrics, COCO results list with file names).
    """
    from detkit.data.loader import build_loader  # engine may use data; modeling may not

    was_training = model.training
    model.eval()
    loader = build_loader(cfg, "val", dataset=dataset, batch_size=cfg.eval.batch_size, shuffle=False,
                          pin_memory=device.type == "cuda")
    detections, ids, loss_sums, batches = {}, [], {}, 0
    bar = tqdm(loader, desc="eval", leave=False, disable=not progress or not sys.stderr.isatty())
    for images, targets in bar:
        images = [img.to(device, non_blocking=True) for img in images]
        moved = [{k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                 for t in targets]
        with autocast_of(precision):
            outputs, losses = model(images, moved, orig_sizes=[tuple(t["orig_size"]) for t in targets])
        for target, out in zip(targets, outputs):
            detections[int(target["image_id"])] = {k: v.cpu() for k, v in out.items()}
            ids.append(int(target["image_id"]))
        for k, v in losses.items():  # summed on the device in float64 (read once, at the end)
            loss_sums[k] = v.detach().double() + loss_sums.get(k, 0.0)
        batches += 1
    model.train(was_training)
    annotations = [dataset.get_annotation(i) for i in range(len(dataset))]
    order = [int(a["image_id"]) for a in annotations]
    aligned = [detections[i] for i in order]
    metrics, results = evaluate_detections(annotations, aligned, dataset.classes, dataset.category_ids,
                                           backend=cfg.eval.backend)
    if batches:
        val_loss = {k: float(v) / batches for k, v in loss_sums.items()}
        val_loss["loss"] = sum(val_loss.values())
        metrics["val_loss"] = val_loss
    return metrics, results


def evaluate_checkpoint(checkpoint_path: Union[str, Sequence[str]], *, config_path: Optional[str] = None,
                        overrides: Sequence[str] = (),
                        split: Optional[str] = None, output_dir: Optional[str] = None, device: str = "cpu",
                        precise_bn_batches: int = 0, progress: bool = True, weights: str = "model",
                        log: Callable[[str], None] = print) -> dict:
    """Evaluate a checkpoint on a split; print the COCO and per-class tables; write eval.json, detections.json.

    ``split``: None or "val" = the config's validation split, "train" = its training split, any other
    name = that VOC split of the validation roots. ``precise_bn_batches`` > 0 first re-estimates the
    BatchNorm statistics with the checkpoint's weights over that many training batches (for
    checkpoints whose statistics are the running averages of training). ``weights``: as in
    :func:`load_trained_model` ("train_model" evaluates the trained weights of a moving-average run).
    ``checkpoint_path``: one checkpoint, or a list of several to evaluate as one ensemble
    (detkit.modeling.ensemble; the first checkpoint's config governs the data set and post-processing).
    """
    from detkit.config import load_config, replace_values
    from detkit.data.formats import build_dataset
    from detkit.evaluation.evaluator import format_coco_table, format_per_class_table, write_json

    resolve_device(device, key="device")  # before the checkpoint is read and the data set is scanned
    paths = checkpoint_paths(checkpoint_path)
    if len(paths) > 1 and precise_bn_batches > 0:
        raise ConfigError(f"--precise-bn re-estimates one checkpoint's BatchNorm statistics; evaluate each of the "
                          f"{len(paths)} checkpoints with it first, or give the ensemble without it")
    checkpoint_path = ", ".join(paths)  # for the messages
    overrides = list(overrides)
    if split not in (None, "train", "val"):
        overrides.append(f"data.val.splits=[{split}]")
    model, cfg, ckpt = load_trained_models(paths, torch.device(device), overrides, weights=weights)
    if split not in (None, "train", "val") and cfg.data.format != "voc":
        raise ConfigError(f"--split {split!r}: a named split needs data.format 'voc' (this config has "
                          f"'{cfg.data.format}'); use --split train or val, or override data.val.ann_file")
    if config_path is not None and "source" in ckpt:
        # torchvision weights: their inference settings (resize included) stay, the config gives the data set
        cfg = with_data_source(cfg, load_config(config_path, overrides))
    elif config_path is not None:  # another config for the data and settings; the model keeps its anchors
        cfg = replace_values(load_config(config_path, overrides), {"model.anchors.shapes": cfg.model.anchors.shapes})
    dataset = build_dataset(cfg, "train" if split == "train" else "val", classes=ckpt["classes"])
    if list(dataset.classes) != list(ckpt["classes"]):
        raise CheckpointError(f"checkpoint '{checkpoint_path}' was trained on classes {ckpt['classes']} "
                              f"but the data set has {list(dataset.classes)}")
    if precise_bn_batches > 0:
        from detkit.evaluation.precise_bn import refresh_detector_bn_stats

        train_set = dataset if split == "train" else build_dataset(cfg, "train", classes=ckpt["classes"])
        used = refresh_detector_bn_stats(model, cfg, train_set, torch.device(device), num_batches=precise_bn_batches)
        log(f"BatchNorm statistics re-estimated over {used} training batches")
    precision = prepare_inference(model, cfg, torch.device(device), log=log)
    metrics, results = run_evaluation(model, dataset, cfg, torch.device(device), progress=progress,
                                      precision=precision)
    if len(paths) > 1:
        log(f"ensemble of {len(paths)} checkpoints: {checkpoint_path}")
    log(f"{len(dataset)} images; COCO metrics:\n{format_coco_table(metrics)}")
    log("per class:\n" + format_per_class_table(metrics))
    if output_dir:
        write_json(metrics, os.path.join(output_dir, "eval.json"))
        write_json(results, os.path.join(output_dir, "detections.json"))
        log(f"wrote {os.path.join(output_dir, 'eval.json')} and detections.json")
    return metrics


# The data keys that belong to a model's inference (its resize), not to the data set.
RESIZE_KEYS = ("min_size", "max_size", "test_min_size", "test_resize")


def with_data_source(cfg, source):
    """``cfg`` with the data set of ``source`` (every data key but the resize: :data:`RESIZE_KEYS`)."""
    from detkit.config import config_from_dict, config_to_dict

    merged = config_to_dict(cfg)
    data = config_to_dict(source)["data"]
    merged["data"] = {**data, **{k: merged["data"][k] for k in RESIZE_KEYS}}
    return config_from_dict(merged)
