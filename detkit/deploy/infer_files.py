"""Inference on image files: expand inputs, detect in batches, draw, write detections.json.

A file that cannot be read is reported and skipped; the others are still processed.
:func:`infer_inputs` is what ``detkit infer`` runs: a checkpoint or an exported model over inputs.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from detkit.config import Config
from detkit.data.image_io import IMAGE_EXTENSIONS, read_image
from detkit.data.transforms import build_transforms
from detkit.deploy.exported_model import ExportedModel, load_exported
from detkit.errors import DataError, ExportError
from detkit.evaluation.evaluator import write_json
from detkit.runtime.precision import Precision, autocast_of
from detkit.vis import draw_detections

__all__ = ["image_to_input", "expand_inputs", "predict_files", "infer_inputs"]


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Image paths named by files, folders (their image files, sorted) and glob patterns.

    Returns (paths, problems) where problems lists (input, reason) for inputs that match nothing.
    """
    paths, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                problems.append((item, f"folder has no image files ({', '.join(IMAGE_EXTENSIONS)})"))
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        elif any(ch in item for ch in "*?["):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                problems.append((item, "pattern matches no file"))
            paths.extend(found)
        else:
            problems.append((item, "no such file or folder"))
    return list(dict.fromkeys(paths)), problems


def image_to_input(image: np.ndarray, transform, file_name: str = "") -> torch.Tensor:
    """One RGB uint8 image (H, W, 3) as the detector's input: the test transform (resize), then a
    float CHW tensor in [0, 1] (the detector normalises it)."""
    sample = {"image": image, "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros((0,), np.int64),
              "ignore_boxes": np.zeros((0, 4), np.float32), "image_id": 0, "orig_size": image.shape[:2],
              "file_name": file_name}
    resized = transform(sample)["image"]
    return torch.from_numpy(np.array(resized, copy=True)).permute(2, 0, 1).float().div_(255)  # HWC -> CHW


def _load(path: str, transform) -> dict:
    """The image (RGB uint8) and, when ``transform`` is given, the detector's input tensor."""
    image = read_image(path)
    tensor = None if transform is None else image_to_input(image, transform, os.path.basename(path))
    return {"tensor": tensor, "orig_size": tuple(int(v) for v in image.shape[:2]), "image": image}


def _detect(model, batch: list, device: str, precision: Optional[Precision]) -> list:
    """Detections of a batch of loaded images, by a Detector or an exported model (one image at a time)."""
    if isinstance(model, ExportedModel):
        return [model.detect(item["image"]) for _, item in batch]
    with autocast_of(precision):
        return model([item["tensor"].to(device) for _, item in batch],
                     orig_sizes=[item["orig_size"] for _, item in batch])


@torch.inference_mode()
def predict_files(model: Union[torch.nn.Module, ExportedModel], cfg: Optional[Config], classes: Sequence[str],
                  category_ids: Sequence[int], paths: Sequence[str], *, output_dir: str, batch_size: int = 1,
                  device: str = "cpu", progress: bool = True, log: Callable[[str], None] = print,
                  precision: Optional[Precision] = None, score_threshold: Optional[float] = None) -> dict:
    """Detect on each file, save ``<output_dir>/<name>`` with boxes drawn and ``detections.json``.

    ``model``: a Detector (with its checkpoint's ``cfg`` for the test resize) or an
    :class:`~detkit.deploy.exported_model.ExportedModel` (``cfg`` unused: the resize is in its graph).
    ``precision``: the autocast the detector runs under (None = fp32). ``score_threshold``: drop
    detections scoring below it (for an exported model, whose own threshold is baked in).

    Returns ``{"processed": n, "failed": [(path, reason), ...], "detections": n}``.
    """
    os.makedirs(output_dir, exist_ok=True)
    exported = isinstance(model, ExportedModel)
    transform = None if exported else build_transforms(cfg.data, train=False, seed=0)
    if not exported:
        model = model.to(device).eval()
    results, failed, processed, used_names = [], [], 0, set()
    bar = tqdm(total=len(paths), desc="infer", leave=False, disable=not progress or not sys.stderr.isatty())
    for start in range(0, len(paths), batch_size):
        batch = []
        for path in paths[start:start + batch_size]:
            try:
                batch.append((path, _load(path, transform)))
            except DataError as exc:
                failed.append((path, str(exc)))
                log(f"skipped: {exc}")
        if batch:
            for (path, item), out in zip(batch, _detect(model, batch, device, precision)):
                if score_threshold is not None:
                    keep = out["scores"] >= score_threshold
                    out = {k: v[keep] for k, v in out.items()}
                results.extend(_to_results(out, path, category_ids))
                drawn = draw_detections(item["image"], out["boxes"].cpu().numpy(), out["labels"].cpu().tolist(),
                                        out["scores"].cpu().tolist(), classes)
                drawn.save(_output_image_path(output_dir, path, used_names))
                processed += 1
        bar.update(len(paths[start:start + batch_size]))
    bar.close()
    write_json(results, os.path.join(output_dir, "detections.json"))
    return {"processed": processed, "failed": failed, "detections": len(results)}


def _to_results(out: dict, path: str, category_ids: Sequence[int]) -> list[dict]:
    boxes = out["boxes"].cpu().numpy()
    return [{"file_name": os.path.basename(path), "path": path, "category_id": int(category_ids[int(label) - 1]),
             "bbox": [round(float(b[0]), 2), round(float(b[1]), 2), round(float(b[2] - b[0]), 2),
                      round(float(b[3] - b[1]), 2)], "score": round(float(score), 5)}
            for b, label, score in zip(boxes, out["labels"].cpu().tolist(), out["scores"].cpu().tolist())]


def _output_image_path(output_dir: str, path: str, used_names: set) -> str:
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ext.lower() if ext.lower() in (".jpg", ".jpeg", ".png") else ".png"
    name, counter = stem + ext, 1
    while name in used_names:  # two inputs with the same name in different folders
        name, counter = f"{stem}_{counter}{ext}", counter + 1
    used_names.add(name)
    return os.path.join(output_dir, name)


def infer_inputs(inputs: Sequence[str], *, output_dir: str, checkpoint: Optional[str] = None,
                 exported: Optional[str] = None, overrides: Sequence[str] = (), device: str = "cpu",
                 batch_size: int = 1, score_threshold: Optional[float] = None, progress: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    """Run a checkpoint (or an exported model) over image files, folders and glob patterns, as ``detkit infer``.

    Args:
        checkpoint / exported: a detkit checkpoint, or a file written by export (exactly one of them).
        overrides: ``dotted.key=value`` inference settings of the checkpoint's config (e.g.
            ``eval.fold_bn=false``, ``eval.precision=fp32``); an exported model has its settings baked in.
        score_threshold: keep detections at or above it: for a checkpoint it sets
            ``model.roi_head.score_thresh``; an exported model's own threshold is baked in, so there it
            can only raise it.
    Returns:
        ``{"processed": n, "failed": [(input or path, reason), ...], "detections": n}``; an input that
        matches no file counts as failed (and is logged), as does an unreadable image.
    Raises:
        ExportError: overrides or a device other than the CPU with an exported model.
        CheckpointError, ConfigError: the checkpoint or an override is invalid.
    """
    from detkit.runtime.device import resolve_device
    from detkit.weights.trained_model import load_trained_model, prepare_inference

    if (checkpoint is None) == (exported is None):
        raise ExportError("give either a checkpoint (--checkpoint) or an exported model (--model), not both or none")
    if exported is not None:
        if overrides or device != "cpu":
            raise ExportError("key=value overrides, --precision and --device apply to --checkpoint; an exported "
                              "--model runs on the CPU with the settings baked in at export (re-export to change "
                              "them)")
        model, cfg, precision = load_exported(exported), None, None
        classes, category_ids = model.classes, model.category_ids
    else:
        resolve_device(device, key="--device")
        if score_threshold is not None:  # the model's own threshold: it also applies before its top-N cut
            overrides = [*overrides, f"model.roi_head.score_thresh={score_threshold}"]
        model, cfg, ckpt = load_trained_model(checkpoint, overrides=list(overrides))
        precision = prepare_inference(model, cfg, torch.device(device), log=log)
        classes, score_threshold = ckpt["classes"], None  # now in the config: predict_files need not filter
        category_ids = ckpt.get("category_ids") or list(range(1, len(classes) + 1))
    paths, problems = expand_inputs(inputs)
    for item, reason in problems:
        log(f"skipped: {item}: {reason}")
    summary = predict_files(model, cfg, classes, category_ids, paths, output_dir=output_dir,
                            batch_size=max(1, batch_size), device=device, progress=progress, log=log,
                            precision=precision, score_threshold=score_threshold)
    summary["failed"] = list(problems) + summary["failed"]
    return summary
