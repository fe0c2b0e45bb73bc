"""``detkit report RUN_A RUN_B``: two runs side by side.

Their summaries in two columns, their curves overlaid (loss, learning rate, validation mAP), the COCO
numbers and per-class AP with B - A deltas, and the validation images where they disagree most: both
runs' detections drawn on the same image, ranked by how far apart their error counts are.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

from detkit.data.image_io import read_image
from detkit.errors import DataError
from detkit.evaluation.evaluator import COCO_METRIC_NAMES
from detkit.report import figures
from detkit.report.error_analysis import ERROR_KINDS, ImageErrors
from detkit.report.gallery import KIND_COLOURS, KIND_NAMES, draw_errors, jpeg_data_uri
from detkit.report.page import render_page
from detkit.report.run_contents import RunContents, read_run
from detkit.report.run_report import error_analysis_of, run_summary, write_page
from detkit.vis import DEFAULT_DRAW_THRESHOLD

__all__ = ["DEFAULT_DISAGREEMENTS", "Disagreement", "write_comparison", "comparison_context"]

DEFAULT_DISAGREEMENTS = 24


@dataclass
class Disagreement:
    """One validation image drawn for both runs: A's and B's drawings and error counts."""

    file_name: str
    image_a: str
    image_b: str
    errors_a: int
    errors_b: int


def _summary_rows(run_a: RunContents, run_b: RunContents) -> List[tuple]:
    """(label, value in A, value in B) for every label either summary has, in A's order then B's."""
    a, b = dict(run_summary(run_a)), dict(run_summary(run_b))
    labels = list(a) + [label for label in b if label not in a]
    return [(label, a.get(label, "-"), b.get(label, "-")) for label in labels]


def _series(run: RunContents, kind: str, x: str, y: str) -> tuple:
    points = [(r[x], r[y]) for r in run.records_of(kind) if x in r and y in r]
    return run.name, [p[0] for p in points], [p[1] for p in points]


def _overlays(run_a: RunContents, run_b: RunContents) -> Dict[str, Optional[str]]:
    label = {id(run_a): "A: " + run_a.name, id(run_b): "B: " + run_b.name}

    def both(kind: str, x: str, y: str) -> list:
        return [(label[id(run)],) + _series(run, kind, x, y)[1:] for run in (run_a, run_b)]

    return {"loss": figures.overlay_figure(both("train", "iteration", "loss"), xlabel="iteration",
                                           ylabel="training loss", log_y=True),
            "lr": figures.overlay_figure(both("train", "iteration", "lr"), xlabel="iteration", ylabel="learning rate"),
            "map": figures.overlay_figure(both("eval", "epoch", "mAP"), xlabel="epoch", ylabel="validation mAP")}


def _metric_rows(run_a: RunContents, run_b: RunContents) -> tuple:
    """(COCO rows, per-class rows) of (name, A, B, B - A); None where a run has no value."""
    def coco(run: RunContents) -> dict:
        return (run.eval_metrics or {}).get("coco") or {}

    def per_class(run: RunContents) -> dict:
        return {name: v.get("AP") for name, v in ((run.eval_metrics or {}).get("per_class") or {}).items()}

    def row(name, a, b):
        return (name, a, b, round(b - a, 3) if a is not None and b is not None else None)  # no '-0.000'

    coco_rows = [row(n, coco(run_a).get(n), coco(run_b).get(n)) for n in COCO_METRIC_NAMES
                 if n in coco(run_a) or n in coco(run_b)]
    ap_a, ap_b = per_class(run_a), per_class(run_b)
    names = list(ap_a) + [n for n in ap_b if n not in ap_a]
    class_rows = sorted((row(n, ap_a.get(n), ap_b.get(n)) for n in names),
                        key=lambda r: -abs(r[3]) if r[3] is not None else 0.0)
    return coco_rows, class_rows


def _disagreements(run_a: RunContents, run_b: RunContents, threshold: float, limit: int,
                   log: Callable[[str], None]) -> List[Disagreement]:
    """The validation images whose error counts differ most between the runs, both drawn."""
    validation, analysis_a = error_analysis_of(run_a, log)
    _, analysis_b = error_analysis_of(run_b, log)
    if analysis_a is None or analysis_b is None:
        return []
    by_name_b: Dict[str, ImageErrors] = {e.file_name: e for e in analysis_b}
    pairs = [(a, by_name_b[a.file_name]) for a in analysis_a if a.file_name in by_name_b]
    if not pairs:
        run_a.missing.append("disagreements: the two runs share no validation image")
        return []
    pairs.sort(key=lambda p: (-abs(p[0].error_count(threshold) - p[1].error_count(threshold)), p[0].file_name))
    out = []
    for a, b in pairs[:limit]:
        try:
            image = read_image(validation.paths[a.image_id])
        except DataError as exc:
            run_a.missing.append(f"disagreements: {exc}")
            continue
        out.append(Disagreement(file_name=a.file_name, errors_a=a.error_count(threshold),
                                errors_b=b.error_count(threshold),
                                image_a=jpeg_data_uri(draw_errors(image, a, run_a.classes, threshold)),
                                image_b=jpeg_data_uri(draw_errors(image, b, run_b.classes, threshold))))
    return out


def comparison_context(run_a: RunContents, run_b: RunContents, *, draw_threshold: float, limit: int,
                       log: Callable[[str], None] = print) -> dict:
    """Everything the comparison page shows."""
    coco_rows, class_rows = _metric_rows(run_a, run_b)
    disagreements = _disagreements(run_a, run_b, draw_threshold, limit, log)
    missing = [f"A: {line}" for line in run_a.missing] + [f"B: {line}" for line in run_b.missing]
    return {"title": f"detkit run comparison: {run_a.name} (A) and {run_b.name} (B)", "run_a": run_a,
            "run_b": run_b, "summary": _summary_rows(run_a, run_b), "figures": _overlays(run_a, run_b),
            "coco_rows": coco_rows, "class_rows": class_rows, "disagreements": disagreements,
            "threshold": draw_threshold, "missing": missing, "error_kinds": ERROR_KINDS, "kind_names": KIND_NAMES,
            "kind_colours": {k: "#%02x%02x%02x" % c for k, c in KIND_COLOURS.items()},
            "generated": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def write_comparison(run_dir_a: str, run_dir_b: str, output: Optional[str] = None, *,
                     draw_threshold: float = DEFAULT_DRAW_THRESHOLD, limit: int = DEFAULT_DISAGREEMENTS,
                     log: Callable[[str], None] = print) -> str:
    """Write the comparison of two run folders to ``output`` (default ``RUN_A/compare_<B's name>.html``);
    returns the path written.

    Raises:
        DetkitError: a folder is not a run folder, or ``output`` cannot be written.
    """
    run_a, run_b = read_run(run_dir_a), read_run(run_dir_b)
    context = comparison_context(run_a, run_b, draw_threshold=draw_threshold, limit=limit, log=log)
    path = output or os.path.join(run_dir_a, f"compare_{run_b.name}.html")
    write_page(render_page("compare.html.j2", context), path)
    for line in context["missing"]:
        log(f"report: {line}")
    log(f"report: {path} ({os.path.getsize(path) / 2**20:.1f} MiB, {len(context['disagreements'])} images compared)")
    return path
