"""Inference on image and video files: expand inputs, detect in batches, draw, write detections.json.

Images are detected in batches and saved drawn (upscaled for drawing when small, see
:func:`detkit.vis.draw_detections`); video files (:data:`~detkit.deploy.infer_video.VIDEO_EXTENSIONS`)
go frame by frame through :func:`detkit.deploy.infer_video.predict_video`. A file that cannot be read
is reported and skipped; the others are still processed. :func:`infer_inputs` is what ``detkit infer``
runs: a checkpoint or an exported model over inputs.
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
from detkit.deploy.detection_records import coco_entries
from detkit.deploy.exported_model import ExportedModel, load_exported
from detkit.deploy.infer_video import VIDEO_EXTENSIONS, is_video, predict_video
from detkit.errors import DataError, ExportError
from detkit.evaluation.evaluator import write_json
from detkit.runtime.precision import Precision, autocast_of
from detkit.vis import DEFAULT_DRAW_THRESHOLD, draw_detections

__all__ = ["image_to_input", "expand_inputs", "predict_files", "infer_inputs"]


def expand_inputs(inputs: Sequence[str], *, videos: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """File paths named by files, folders (their image files, sorted; with ``videos`` also their video
    files) and glob patterns (every file they match).

    Returns (paths, problems) where problems lists (input, reason) for inputs that match nothing.
    """
    paths, problems = [], []
    extensions = IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ())
    kinds = "image or video files" if videos else "image files"
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(extensions))
            if not found:
                problems.append((item, f"folder has no {kinds} ({', '.join(extensions)})"))
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
                  precision: Optional[Precision] = None, score_threshold: Optional[float] = None,
                  draw_threshold: float = DEFAULT_DRAW_THRESHOLD, every: int = 1) -> dict:
    """Detect on each file, save ``<output_dir>/<name>`` with boxes drawn and ``detections.json``.

    ``model``: a Detector (with its checkpoint's ``cfg`` for the test resize) or an
    :class:`~detkit.deploy.exported_model.ExportedModel` (``cfg`` unused: the resize is in its graph).
    ``precision``: the autocast the detector runs under (None = fp32). ``score_threshold``: drop
    detections scoring below it (for an exported model, whose own threshold is baked in).
    ``draw_threshold``: draw only detections scoring at least this; detections.json (and a video's
    JSON lines) still hold every detection. A drawn image smaller than 640 pixels is upscaled for
    drawing, so it can be larger than its input. A path named like a video (``.mp4``, ``.avi``, ...)
    is a video: ``<stem>.mp4`` and ``<stem>.jsonl`` (see :mod:`detkit.deploy.infer_video`), detected on
    every ``every``-th frame, one frame at a time. detections.json is written when any image was given
    (or no video).

    Returns ``{"processed": images, "failed": [(path, reason), ...], "detections": n (in images and video
    frames), "videos": n, "frames": frames written}``.
    """
    _check_every(every)
    os.makedirs(output_dir, exist_ok=True)
    exported = isinstance(model, ExportedModel)
    transform = None if exported else build_transforms(cfg.data, train=False, seed=0)
    if not exported:
        model = model.to(device).eval()
    images = [p for p in paths if not is_video(p)]
    videos = [p for p in paths if is_video(p)]
    detect = _frame_detector(model, transform, device, precision, score_threshold)
    options = dict(output_dir=output_dir, classes=classes, category_ids=category_ids, progress=progress, log=log,
                   draw_threshold=draw_threshold)
    results, failed, used_names = [], [], set()
    processed = _predict_images(model, transform, images, batch_size=batch_size, device=device, precision=precision,
                                score_threshold=score_threshold, results=results, failed=failed,
                                used_names=used_names, **options)
    summary = {"processed": processed, "failed": failed, "detections": len(results), "videos": 0, "frames": 0}
    for path in videos:
        try:
            found = predict_video(detect, path, every=every, used_names=used_names, **options)
        except DataError as exc:
            failed.append((path, str(exc)))
            log(f"skipped: {exc}")
            continue
        summary["videos"] += 1
        summary["frames"] += found["frames"]
        summary["detections"] += found["detections"]
    if images or not videos:
        write_json(results, os.path.join(output_dir, "detections.json"))
    return summary


def _check_every(every) -> None:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise DataError(f"--every must be a whole number of at least 1 (detect on every N-th video frame), "
                        f"got {every!r}")


def _frame_detector(model, transform, device: str, precision: Optional[Precision],
                    score_threshold: Optional[float]) -> Callable[[np.ndarray], dict]:
    """A function of one RGB uint8 frame (H, W, 3) giving its detections as NumPy arrays (boxes (D, 4)
    xyxy in the frame's pixels, scores (D,), labels (D,)), by ``model`` as :func:`_detect` runs it."""
    def detect(image: np.ndarray) -> dict:
        tensor = None if transform is None else image_to_input(image, transform)
        item = {"tensor": tensor, "orig_size": tuple(int(v) for v in image.shape[:2]), "image": image}
        out = _detect(model, [("frame", item)], device, precision)[0]
        found = {k: out[k].cpu().numpy() for k in ("boxes", "scores", "labels")}
        if score_threshold is not None:
            keep = found["scores"] >= score_threshold
            found = {k: v[keep] for k, v in found.items()}
        return found
    return detect


def _predict_images(model, transform, paths: Sequence[str], *, output_dir: str, classes: Sequence[str],
                    category_ids: Sequence[int], batch_size: int, device: str, precision: Optional[Precision],
                    score_threshold: Optional[float], draw_threshold: float, results: list, failed: list,
                    used_names: set, progress: bool, log: Callable[[str], None]) -> int:
    """Detect on image files in batches; extend ``results`` (COCO results) and ``failed``; save the drawn
    images. Returns the number of images processed."""
    processed = 0
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
                                        out["scores"].cpu().tolist(), classes, min_score=draw_threshold)
                drawn.save(_output_image_path(output_dir, path, used_names))
                processed += 1
        bar.update(len(paths[start:start + batch_size]))
    bar.close()
    return processed


def _to_results(out: dict, path: str, category_ids: Sequence[int]) -> list[dict]:
    entries = coco_entries(out["boxes"].cpu(), out["scores"].cpu(), out["labels"].cpu(), category_ids)
    return [{"file_name": os.path.basename(path), "path": path, **entry} for entry in entries]


def _output_image_path(output_dir: str, path: str, used_names: set) -> str:
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ext.lower() if ext.lower() in (".jpg", ".jpeg", ".png") else ".png"
    name, counter = stem + ext, 1
    while name in used_names:  # two inputs with the same name in different folders
        name, counter = f"{stem}_{counter}{ext}", counter + 1
    used_names.add(name)
    return os.path.join(output_dir, name)


def infer_inputs(inputs: Sequence[str], *, output_dir: str, checkpoint: Union[str, Sequence[str], None] = None,
                 exported: Optional[str] = None, overrides: Sequence[str] = (), device: str = "cpu",
                 batch_size: int = 1, score_threshold: Optional[float] = None, progress: bool = True,
                 log: Callable[[str], None] = print, draw_threshold: float = DEFAULT_DRAW_THRESHOLD,
                 every: int = 1) -> dict:
    """Run a checkpoint (or an exported model) over image and video files, folders and glob patterns, as
    ``detkit infer``. A folder gives its image files and its video files (sorted by name).

    Args:
        checkpoint / exported: a detkit checkpoint (or a list of several of the same classes: one ensemble,
            detkit.modeling.ensemble), or a file written by export (exactly one of them).
        overrides: ``dotted.key=value`` inference settings of the checkpoint's config (e.g.
            ``eval.fold_bn=false``, ``eval.precision=fp32``); an exported model has its settings baked in.
        score_threshold: keep detections at or above it: for a checkpoint it sets
            ``model.roi_head.score_thresh``; an exported model's own threshold is baked in, so there it
            can only raise it.
        draw_threshold: draw only detections scoring at least this (the outputs' JSON has them all).
        every: detect on every N-th frame of a video (the frames between show the latest detections).
    Returns:
        ``{"processed": images, "failed": [(input or path, reason), ...], "detections": n, "videos": n,
        "frames": n}``; an input that matches no file counts as failed (and is logged), as does an
        unreadable image or video.
    Raises:
        ExportError: overrides or a device other than the CPU with an exported model.
        DataError: ``every`` below 1.
        CheckpointError, ConfigError: the checkpoint or an override is invalid.
    """
    from detkit.runtime.device import resolve_device
    from detkit.weights.trained_model import load_trained_models, prepare_inference

    _check_every(every)
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
        model, cfg, ckpt = load_trained_models(checkpoint, overrides=list(overrides))
        precision = prepare_inference(model, cfg, torch.device(device), log=log)
        classes, score_threshold = ckpt["classes"], None  # now in the config: predict_files need not filter
        category_ids = ckpt.get("category_ids") or list(range(1, len(classes) + 1))
    paths, problems = expand_inputs(inputs, videos=True)
    for item, reason in problems:
        log(f"skipped: {item}: {reason}")
    summary = predict_files(model, cfg, classes, category_ids, paths, output_dir=output_dir,
                            batch_size=max(1, batch_size), device=device, progress=progress, log=log,
                            precision=precision, score_threshold=score_threshold, draw_threshold=draw_threshold,
                            every=every)
    summary["failed"] = list(problems) + summary["failed"]
    return summary
