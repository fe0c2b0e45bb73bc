"""``detkit report RUN_DIR``: one self-contained HTML page about a training run.

The page holds the run summary, the config, the data report, the anchors, the loss / learning-rate /
mAP curves, the COCO table and per-class AP, the PR curves, the confusion matrix and the error-analysis
gallery (:mod:`detkit.report.gallery`). Every figure and image is embedded, so the file opens from disk
anywhere with no server and no network. A partial run gets the sections its files allow and one line
per missing part; nothing missing raises.
"""

from __future__ import annotations

import datetime
import math
import os
from typing import Callable, Dict, List, Optional

from detkit.atomic_io import atomic_open
from detkit.errors import DetkitError
from detkit.evaluation.evaluator import COCO_METRIC_NAMES
from detkit.report import figures
from detkit.report.error_analysis import DETECTION_KINDS, ERROR_KINDS, analyse_errors
from detkit.report.gallery import KIND_COLOURS, KIND_NAMES, build_gallery
from detkit.report.page import render_page
from detkit.report.run_contents import RunContents, read_run
from detkit.report.validation_set import load_validation_set
from detkit.vis import DEFAULT_DRAW_THRESHOLD

__all__ = ["REPORT_FILE_NAME", "DEFAULT_GALLERY_SIZE", "write_report", "run_summary", "error_analysis_of", "write_page"]

REPORT_FILE_NAME = "report.html"
DEFAULT_GALLERY_SIZE = 100  # the worst images shown; the page stays a few MB on any data set


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def run_summary(run: RunContents) -> List[tuple]:
    """(label, value) rows of the run summary: data, model, precision, device, progress, time, speed, result."""
    rows: List[tuple] = []
    setup, cfg = run.setup or {}, run.config
    data = setup.get("data", {})
    if data:
        rows.append(("data", f"{data.get('format', '?')}: {data['train']['images']} training images "
                             f"({data['train']['boxes']} boxes), {data['val']['images']} validation images "
                             f"({data['val']['boxes']} boxes)"))
    if run.classes:
        rows.append(("classes", f"{len(run.classes)}: {', '.join(run.classes)}"))
    if cfg is not None:
        m = cfg.model
        head = f"{m.roi_head.num_fc} FC"
        if m.roi_head.num_conv:
            head = f"{m.roi_head.num_conv} conv + {head}"
        model = (f"ResNet-{m.backbone.depth} {m.backbone.features.upper()} ({m.backbone.norm or 'auto'} norm), "
                 f"anchors {m.anchors.mode}, box head {head}")
        if setup.get("parameters"):
            model += f", {setup['parameters'] / 1e6:.1f} M parameters"
        rows.append(("model", model))
        start = m.weights or m.backbone.weights
        rows.append(("started from", str(start) if start else "scratch (random weights)"))
    if setup.get("precision"):
        rows.append(("precision", f"training {setup['precision']['train']}, evaluation {setup['precision']['eval']}"))
    if setup.get("device"):
        rows.append(("device", f"{setup['device']} x {setup.get('world_size', 1)} process(es)"))
    rows += _progress_rows(run)
    return rows


def _progress_rows(run: RunContents) -> List[tuple]:
    rows: List[tuple] = []
    epochs = run.records_of("epoch")
    planned = run.config.train.epochs if run.config is not None else None
    if epochs or planned:
        done = epochs[-1]["epoch"] if epochs else 0
        rows.append(("epochs", f"{done} of {planned}" if planned else str(done)))
    if epochs:
        seconds = sum(float(e.get("seconds", 0.0)) for e in epochs)
        rate = sum(float(e.get("img_per_s", 0.0)) * float(e.get("seconds", 0.0)) for e in epochs) / max(seconds, 1e-9)
        rows.append(("training time", f"{_minutes(seconds)} in epochs, {rate:.2f} img/s"))
    started, last = (run.setup or {}).get("started"), max((r.get("time", 0) for r in run.records), default=0)
    if started and last:
        stamp = datetime.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M")
        rows.append(("wall time", f"{_minutes(last - started)} from set-up to the last record (started {stamp})"))
    evals = run.records_of("eval")
    if evals:
        best = max(evals, key=lambda r: r.get("mAP", -1.0))
        rows.append(("validation mAP", f"last {evals[-1].get('mAP', 0):.4f} (epoch {evals[-1]['epoch']}), "
                                       f"best {best.get('mAP', 0):.4f} (epoch {best['epoch']})"))
    if run.checkpoints:
        rows.append(("checkpoints", ", ".join(f"{n} {size / 2**20:.0f} MiB" for n, size in run.checkpoints.items())))
    return rows


def error_analysis_of(run: RunContents, log: Callable[[str], None] = print):
    """(validation set, per-image analysis) of ``run``, or (None, None) with a line in ``run.missing``."""
    if run.detections is None:
        return None, None
    try:
        validation = load_validation_set(run)
    except DetkitError as exc:
        run.missing.append(f"gallery: {exc}")
        return None, None
    classes = run.classes
    if not classes:
        run.missing.append("gallery: the run's class names are unknown (no setup.json, eval.json or data.classes)")
        return None, None
    return validation, analyse_errors(validation.annotations, run.detections, classes, validation.category_ids)


def _kind_totals(analysis, threshold: float) -> Dict[str, int]:
    totals = {kind: 0 for kind in DETECTION_KINDS + ("missed", "objects")}
    for errors in analysis:
        for kind, n in errors.counts(threshold).items():
            totals[kind] += n
    return totals


def _anchor_levels(anchors: Optional[dict]) -> List[tuple]:
    """(level name, stride, [(w, h), ...]) per level of setup.json's anchors: P5 for stride 32."""
    if not anchors:
        return []
    return [(f"P{int(math.log2(stride))}", stride, level)
            for stride, level in zip(anchors["strides"], anchors["shapes"])]


def _evaluation_section(run: RunContents) -> Optional[dict]:
    metrics = run.eval_metrics
    if not metrics or not isinstance(metrics.get("coco"), dict):
        return None
    voc = metrics.get("voc", {}).get("per_class", {})
    per_class = [{"name": name, "AP": v.get("AP", 0.0), "AP50": v.get("AP50", 0.0),
                  "VOC50": voc.get(name, {}).get("AP50_area")} for name, v in metrics.get("per_class", {}).items()]
    return {"coco": [(n, metrics["coco"].get(n, 0.0)) for n in COCO_METRIC_NAMES], "per_class": per_class,
            "num_images": metrics.get("num_images"), "num_detections": metrics.get("num_detections")}


def report_context(run: RunContents, *, draw_threshold: float, gallery_size: int,
                   log: Callable[[str], None] = print) -> dict:
    """Everything the page template shows of ``run``."""
    setup = run.setup or {}
    validation, analysis = error_analysis_of(run, log)
    gallery, totals = [], None
    if analysis is not None:
        gallery, problems = build_gallery(validation.paths, analysis, run.classes, draw_threshold, gallery_size)
        run.missing += [f"gallery: {p}" for p in problems]
        totals = _kind_totals(analysis, draw_threshold)
    return {
        "title": f"detkit run report: {run.name}", "run": run, "summary": run_summary(run),
        "config_text": run.config_text, "data": setup.get("data"), "anchors": setup.get("anchors"),
        "anchor_levels": _anchor_levels(setup.get("anchors")),
        "transfer": run.transfer,
        "figures": {"loss": figures.loss_figure(run.records), "lr": figures.lr_figure(run.records),
                    "map": figures.map_figure(run.records), "pr": figures.pr_figure(run.eval_metrics),
                    "confusion": figures.confusion_figure(run.eval_metrics, run.classes),
                    "anchors": figures.anchor_figure(setup.get("anchors"))},
        "evaluation": _evaluation_section(run), "gallery": gallery, "totals": totals,
        "num_analysed": len(analysis) if analysis is not None else 0,
        "classes": run.classes, "threshold": draw_threshold, "error_kinds": ERROR_KINDS,
        "kind_names": KIND_NAMES, "kind_colours": {k: "#%02x%02x%02x" % c for k, c in KIND_COLOURS.items()},
        "missing": run.missing, "generated": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    }


def write_report(run_dir: str, output: Optional[str] = None, *, draw_threshold: float = DEFAULT_DRAW_THRESHOLD,
                 gallery_size: int = DEFAULT_GALLERY_SIZE, log: Callable[[str], None] = print) -> str:
    """Write the report of the run in ``run_dir`` to ``output`` (default ``run_dir/report.html``).

    Args:
        draw_threshold: detections at or above this score are drawn and counted in the error analysis.
        gallery_size: the gallery shows this many validation images, those with the most errors first.
    Returns:
        the path written.
    Raises:
        DetkitError: ``run_dir`` is not a run folder, or ``output`` cannot be written.
    """
    run = read_run(run_dir)
    context = report_context(run, draw_threshold=draw_threshold, gallery_size=gallery_size, log=log)
    path = output or os.path.join(run_dir, REPORT_FILE_NAME)
    write_page(render_page("run.html.j2", context), path)
    for line in run.missing:
        log(f"report: {line}")
    log(f"report: {path} ({os.path.getsize(path) / 2**20:.1f} MiB, {len(context['gallery'])} gallery images)")
    return path


def write_page(html: str, path: str) -> None:
    """Write a rendered page atomically; a folder that cannot be written is one DetkitError naming it."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_open(path, "w") as f:
            f.write(html)
    except OSError as exc:
        raise DetkitError(f"report file '{path}' cannot be written ({exc.strerror or exc}); choose another "
                          f"--output") from None
