"""Exporting a trained checkpoint to ONNX or TorchScript, and verifying the file against the eager model.

``export_checkpoint(checkpoint, "onnx" | "torchscript", output)`` rebuilds the trained detector (fp32,
BatchNorm folded when ``eval.fold_bn``), wraps it in :class:`detkit.deploy.export_graph.ExportableDetector`
(torch / torchvision operators only: the Numba kernels are not used on this path), traces it once
on an example image, writes the file atomically with its metadata, then loads the written file and
compares it with the eager model (:mod:`detkit.deploy.export_verify`). The report is printed and
written as JSON next to the file (``<output>.verify.json``).

Supported: one image per call, any height and width, RGB uint8 (H, W, 3) input; the batch
dimension is not part of the graph. ONNX opsets 11 to 20 (16 and up when ``model.roi_head.aligned``);
default 17.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from detkit.atomic_io import check_writable_folder, write_json_atomic
from detkit.deploy.export_graph import (
    CASCADE_UNEXPORTABLE,
    OUTPUT_NAMES,
    ExportableDetector,
    describe_unexportable,
    unexportable_settings,
)
from detkit.deploy.export_verify import Tolerances, compare_detections, split_map, summarise
from detkit.deploy.exported_model import METADATA_KEY, TORCHSCRIPT_EXTRA, load_exported, require_onnx
from detkit.errors import DetkitError, ExportError
from detkit.version import __version__

__all__ = ["export_checkpoint", "FORMATS", "DEFAULT_OPSET", "MAX_OPSET", "verification_images", "build_export_model",
           "required_opset"]

FORMATS = ("onnx", "torchscript")
DEFAULT_OPSET = 17
MAX_OPSET = 20  # the highest opset torch.onnx's TorchScript-based exporter writes


def _check_output_path(output: str) -> str:
    output = os.path.abspath(os.path.expanduser(output))
    if os.path.isdir(output):
        raise ExportError(f"--output '{output}' is a folder; give a file name such as model.onnx")
    try:
        check_writable_folder(os.path.dirname(output))
    except OSError as exc:
        raise ExportError(f"cannot write the exported model to '{output}': {exc.strerror or exc} "
                          f"(choose a writable folder)") from None
    return output


def required_opset(aligned: bool) -> Tuple[int, str]:
    """The lowest ONNX opset that exports a graph with RoIAlign ``aligned`` = this, and why."""
    if aligned:
        return 16, "model.roi_head.aligned = true needs RoiAlign's coordinate_transformation_mode (opset 16)"
    return 11, "NonMaxSuppression and Resize with output sizes need opset 11"


def _check_opset(opset: int, aligned: bool) -> None:
    needed, why = required_opset(aligned)
    if opset < needed:
        raise ExportError(f"--opset {opset} is too low for this model: {why}; use --opset {needed} or higher "
                          f"(up to {MAX_OPSET})")
    if opset > MAX_OPSET:
        raise ExportError(f"--opset {opset} is not valid: torch's exporter writes opsets {needed} to {MAX_OPSET}")


def build_export_model(checkpoint: str, overrides: Sequence[str] = (),
                       log: Callable[[str], None] = print):
    """(the eager Predictor in fp32, the ExportableDetector sharing its modules) for a checkpoint."""
    from detkit.data.transforms import test_min_size
    from detkit.deploy.predictor import Predictor
    from detkit.weights.trained_model import load_trained_model, prepare_inference

    # fp32, and detkit's kernels (the graph's order of equal scores; torchvision's batched_nms has its own)
    model, cfg, ckpt = load_trained_model(checkpoint, torch.device("cpu"),
                                          list(overrides) + ["eval.precision=fp32", "model.kernels=detkit"])
    unexportable = unexportable_settings(test_hflip=cfg.model.test_hflip, nms_method=cfg.model.roi_head.nms_method,
                                         test_resize=cfg.data.test_resize,
                                         strides_from_size=cfg.model.anchors.strides_from_size,
                                         box_voting=cfg.model.roi_head.box_voting,
                                         test_scales=cfg.model.test_scales)
    if cfg.model.roi_head.cascade:
        raise ExportError(f"'{checkpoint}' is a cascade model (model.roi_head.cascade = "
                          f"{list(cfg.model.roi_head.cascade)}): {CASCADE_UNEXPORTABLE}")
    if unexportable:  # every such setting in one message: a user fixes them all in one go
        raise ExportError(f"'{checkpoint}' has {len(unexportable)} inference setting"
                          f"{'s' if len(unexportable) > 1 else ''} that the exported graph does not compute "
                          "(the verification then compares with the eager model using the exportable values):\n"
                          + describe_unexportable(unexportable))
    precision = prepare_inference(model, cfg, torch.device("cpu"), log=log)
    model.set_memory_format("contiguous")  # the exported graph is laid out by its runtime
    graph = ExportableDetector(model, min_size=test_min_size(cfg.data), max_size=cfg.data.max_size).eval()
    return Predictor(model, cfg, ckpt["classes"], torch.device("cpu"), precision), graph, ckpt


def _metadata(predictor, ckpt: dict, checkpoint: str, fmt: str, opset: Optional[int]) -> dict:
    cfg = predictor.cfg
    head = predictor.model.roi_head
    return {"format": fmt, "opset": opset, "detkit_version": __version__, "checkpoint": os.path.basename(checkpoint),
            "classes": list(ckpt["classes"]), "category_ids": list(ckpt.get("category_ids") or
                                                                   range(1, len(ckpt["classes"]) + 1)),
            "input": "image: uint8 (H, W, 3) RGB, any H and W",
            "outputs": {"boxes": "float32 (D, 4) x1 y1 x2 y2 in the input image's pixels",
                        "scores": "float32 (D,) decreasing", "labels": "int64 (D,) in 1..K (classes[k - 1])"},
            "test_min_size": int(predictor.transform.min_sizes[0]), "max_size": int(cfg.data.max_size),
            "score_thresh": head.score_thresh, "nms_thresh": head.nms_thresh,
            "detections_per_img": head.detections_per_img, "fold_bn": bool(cfg.eval.fold_bn)}


def _example_image() -> torch.Tensor:
    """A deterministic 480 x 640 RGB image to trace with (the graph does not depend on its content)."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (480, 640, 3), dtype=torch.uint8, generator=g)


def _write(graph: ExportableDetector, fmt: str, output: str, opset: int, metadata: dict) -> None:
    example = _example_image()
    folder = os.path.dirname(output)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(output)}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes about constants in the shape arithmetic
            if fmt == "torchscript":
                traced = torch.jit.trace(graph, (example,), check_trace=False)
                torch.jit.save(traced, tmp, _extra_files={TORCHSCRIPT_EXTRA: json.dumps(metadata)})
            else:
                onnx, _ = require_onnx()
                dynamic = {"image": {0: "height", 1: "width"}, **{name: {0: "detections"} for name in OUTPUT_NAMES}}
                torch.onnx.export(graph, (example,), tmp, input_names=["image"], output_names=list(OUTPUT_NAMES),
                                  dynamic_axes=dynamic, opset_version=opset, dynamo=False)
                proto = onnx.load(tmp)
                entry = proto.metadata_props.add()
                entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
                onnx.save(proto, tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _variants(image: np.ndarray, name: str) -> List[Tuple[str, np.ndarray]]:
    """Other sizes and aspect ratios from one image: portrait, a side not divisible by the stride, small."""
    h, w = image.shape[:2]
    out = [(f"{name} [portrait crop]", image[:, : max(1, min(w, h * 2 // 3))]),
           (f"{name} [crop {max(1, h - 37)}x{max(1, w - 51)}]", image[: max(1, h - 37), : max(1, w - 51)]),
           (f"{name} [small crop, enlarged]", image[: max(1, h // 3), : max(1, w // 3)])]
    return [(n, np.ascontiguousarray(v)) for n, v in out]


def verification_images(paths: Optional[Sequence[str]], predictor, log: Callable[[str], None],
                        count: int = 4) -> List[Tuple[str, np.ndarray]]:
    """The images to compare on: ``paths``, or the first ``count`` of the config's val split; plus
    three differently shaped crops of the first (so that dynamic sizes are checked every time)."""
    from detkit.data.image_io import read_image

    if paths:
        images = [(p, read_image(p)) for p in paths]
    else:
        from detkit.data.formats import build_dataset

        try:
            dataset = build_dataset(predictor.cfg, "val", classes=predictor.classes, log_report=False)
            images = [(dataset.image_path(i), read_image(dataset.image_path(i)))
                      for i in range(min(count, len(dataset)))]
        except DetkitError as exc:
            log(f"warning: the config's val split cannot be read ({exc}); verifying on generated images only "
                f"(give --verify-images for a meaningful check)")
            images = []
        if not images:
            g = np.random.default_rng(0)
            images = [("generated 480x640", g.integers(0, 256, (480, 640, 3), dtype=np.uint8))]
    return images + _variants(images[0][1], os.path.basename(images[0][0]))


def export_checkpoint(checkpoint: str, fmt: str, output: str, *, opset: int = DEFAULT_OPSET,
                      overrides: Sequence[str] = (), verify_images: Optional[Sequence[str]] = None,
                      verify_split: Optional[str] = None, verify: bool = True,
                      tolerances: Tolerances = Tolerances(), log: Callable[[str], None] = print) -> dict:
    """Export ``checkpoint`` to ``output`` and verify it; returns the report (also written as JSON).

    Args:
        fmt: "onnx" or "torchscript". opset: ONNX opset (ignored for TorchScript).
        overrides: ``dotted.key=value`` inference settings baked into the graph (e.g. a score threshold).
        verify_images: image files to compare on (default: a few of the config's val split).
        verify_split: "val" (or "train") to also compare COCO mAP over that whole split.
        verify: False skips the comparison (the file is still written).
    Raises:
        ExportError (bad format / opset / output path, missing onnx), CheckpointError (missing or corrupt
        checkpoint). A verification beyond tolerance is not raised: see ``report["passed"]``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not valid: choose {' or '.join(FORMATS)}")
    if fmt == "onnx":
        require_onnx()
    output = _check_output_path(output)
    predictor, graph, ckpt = build_export_model(checkpoint, overrides, log)
    if fmt == "onnx":
        _check_opset(opset, graph.aligned)
    metadata = _metadata(predictor, ckpt, checkpoint, fmt, opset if fmt == "onnx" else None)
    _write(graph, fmt, output, opset, metadata)
    log(f"wrote {output} ({fmt}{f', opset {opset}' if fmt == 'onnx' else ''}, "
        f"{os.path.getsize(output) / 2**20:.1f} MiB)")
    report: Dict[str, object] = {"file": output, "format": fmt, "opset": metadata["opset"], "passed": True,
                                 "tolerances": vars(tolerances)}
    if verify:
        report.update(_verify(predictor, load_exported(output), verify_images, verify_split, tolerances, log))
        write_json_atomic(report, output + ".verify.json")
        log(f"verification report: {output}.verify.json")
    return report


def _verify(predictor, exported, verify_images, verify_split, tol: Tolerances, log) -> dict:
    head = predictor.model.roi_head
    eager = lambda image: _as_tensors(predictor.predict(image))  # noqa: E731

    def compare(name, eager_found, exported_found):
        return compare_detections(name, eager_found, exported_found, tol=tol, score_thresh=head.score_thresh,
                                  detections_per_img=head.detections_per_img)

    comparisons = []
    for name, image in verification_images(verify_images, predictor, log):
        c = compare(name, eager(image), exported.detect(image))
        comparisons.append(c)
        log(f"  {'ok  ' if c.passed else 'FAIL'} {name} {image.shape[0]}x{image.shape[1]}: {c.eager} eager / "
            f"{c.exported} exported detections, {c.matched} matched, box diff {c.max_box_diff:.2e} px, "
            f"score diff {c.max_score_diff:.2e}" + (f", {c.borderline} borderline" if c.borderline else ""))
        for failure in c.failures:
            log(f"       {failure}")
    summary = summarise(comparisons)
    out = {"images": [c.as_dict() for c in comparisons], "summary": summary, "passed": summary["passed"]}
    if verify_split:
        from detkit.data.formats import build_dataset
        from detkit.data.image_io import read_image

        dataset = build_dataset(predictor.cfg, verify_split, classes=predictor.classes, log_report=False)
        log(f"  COCO mAP over the {verify_split} split ({len(dataset)} images), eager and exported ...")
        result = split_map(dataset, eager, exported.detect, read_image, compare=compare)
        result["split"] = verify_split
        per_image = result["summary"]
        map_ok = abs(result["delta"]["mAP"]) <= tol.map
        log(f"  {'ok  ' if per_image['passed'] else 'FAIL'} per image on the split: {per_image['matched']} of "
            f"{per_image['detections_eager']} eager detections matched ({per_image['detections_exported']} "
            f"exported), box diff {per_image['max_box_diff']:.2e} px, score diff {per_image['max_score_diff']:.2e}, "
            f"{per_image['borderline']} borderline; failed: {per_image['failed_images'] or 'none'}")
        log(f"  {'ok  ' if map_ok else 'FAIL'} mAP eager {result['eager']['mAP']:.4f}, exported "
            f"{result['exported']['mAP']:.4f} (delta {result['delta']['mAP']:+.4f}, tolerance {tol.map}); "
            f"AP50 {result['eager']['AP50']:.4f} / {result['exported']['AP50']:.4f}, "
            f"AP75 {result['eager']['AP75']:.4f} / {result['exported']['AP75']:.4f}")
        out["split"] = result
        out["passed"] = out["passed"] and map_ok and per_image["passed"]
    log(f"verification {'passed' if out['passed'] else 'FAILED'}: {summary['matched']} of "
        f"{summary['detections_eager']} eager detections matched on {summary['images']} images, largest box "
        f"difference {summary['max_box_diff']:.2e} px, score {summary['max_score_diff']:.2e}, "
        f"{summary['borderline']} borderline")
    return out


def _as_tensors(found: dict) -> Dict[str, torch.Tensor]:
    return {"boxes": torch.from_numpy(found["boxes"]), "scores": torch.from_numpy(found["scores"]),
            "labels": torch.from_numpy(found["labels"])}
