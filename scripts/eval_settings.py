"""Inference settings of one trained checkpoint compared on one split: COCO metrics and time per image.

Post-processing and test resolution are chosen after training, on a held-out split (BCCD: ``val``
while training on ``train``), without retraining. Each ``--setting NAME=OVERRIDES`` is evaluated in turn
(OVERRIDES: ``key=value`` config overrides separated by spaces, empty for the checkpoint's own
settings), and a Markdown table is printed and written as JSON:

    python -m scripts.eval_settings --checkpoint runs/abl_base9/last.pt --split val \\
        --setting "as trained=" \\
        --setting "score 0.001=model.roi_head.score_thresh=0.001" \\
        --setting "soft-NMS=model.roi_head.score_thresh=0.001 model.roi_head.nms_method=gaussian" \\
        --output runs/abl_base9/settings_val.json

Give ``--checkpoint`` more than once to compare the settings of an ensemble of those checkpoints
(detkit.modeling.ensemble; every setting applies to every member).

The time per image is the evaluation's wall time (model, post-processing and COCO evaluation) over
the number of images, with the torch threads the machine gives; compare settings within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from typing import List, Sequence, Tuple

from detkit.atomic_io import write_json_atomic
from detkit.errors import DetkitError

METRICS = ("mAP", "AP50", "AP75", "APs", "APm", "APl")


def parse_setting(text: str) -> Tuple[str, List[str]]:
    """'NAME=key=value key=value' -> (NAME, [overrides]); the overrides may be empty ('NAME=')."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"--setting {text!r}: write NAME=OVERRIDES, e.g. 'soft=model.roi_head.nms_method=gaussian' "
                         "or 'as trained=' for none")
    overrides = shlex.split(rest)
    for o in overrides:
        if "=" not in o:
            raise ValueError(f"--setting {text!r}: override {o!r} is not key=value")
    return name.strip(), overrides


def compare_settings(checkpoint: str | Sequence[str], settings: Sequence[Tuple[str, List[str]]], split: str = "val",
                     precision: str | None = None, log=print) -> List[dict]:
    """Evaluate the checkpoint (or the ensemble of a list of them) under each setting; returns one row per
    setting (name, overrides, images, seconds per image, and the COCO metrics)."""
    from detkit.evaluation.evaluate import evaluate_checkpoint

    rows = []
    for name, overrides in settings:
        extra = list(overrides) + ([f"eval.precision={precision}"] if precision else [])
        with tempfile.TemporaryDirectory() as scratch:
            start = time.perf_counter()
            metrics = evaluate_checkpoint(checkpoint, overrides=extra, split=split, output_dir=scratch,
                                          progress=False, log=lambda *_: None)
            seconds = time.perf_counter() - start
            with open(os.path.join(scratch, "detections.json")) as f:
                detections = len(json.load(f))
        images = int(metrics.get("num_images", 0)) or None
        row = {"name": name, "overrides": list(overrides), "images": images, "detections": detections,
               "seconds": seconds, "s_per_image": seconds / images if images else None,
               **{k: float(metrics["coco"][k]) for k in METRICS}}
        rows.append(row)
        log(f"{name}: mAP {row['mAP']:.4f} AP50 {row['AP50']:.4f} AP75 {row['AP75']:.4f} ({seconds:.1f} s)")
    return rows


def markdown_table(rows: Sequence[dict]) -> str:
    base = rows[0]["mAP"] if rows else 0.0
    lines = ["| setting | overrides | mAP | vs first | AP50 | AP75 | APs | detections | s/img |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_image = f"{r['s_per_image']:.3f}" if r["s_per_image"] is not None else "-"
        lines.append(f"| {r['name']} | {' '.join(r['overrides']) or '(checkpoint)'} | {r['mAP']:.4f} | "
                     f"{r['mAP'] - base:+.4f} | {r['AP50']:.4f} | {r['AP75']:.4f} | {r['APs']:.4f} | "
                     f"{r['detections']} | {per_image} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, action="append",
                        help="repeat it to evaluate an ensemble of several checkpoints")
    parser.add_argument("--split", default="val", help="train, val (default) or a VOC split name")
    parser.add_argument("--setting", action="append", required=True, metavar="NAME=OVERRIDES",
                        help="repeatable; the first is the row the others are compared with")
    parser.add_argument("--precision", help="eval.precision for every setting (default: the checkpoint's)")
    parser.add_argument("--output", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    try:
        settings = [parse_setting(s) for s in args.setting]
        rows = compare_settings(args.checkpoint, settings, split=args.split, precision=args.precision,
                                log=lambda m: print(m, file=sys.stderr))
    except (ValueError, DetkitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(rows))
    if args.output:
        checkpoint = args.checkpoint[0] if len(args.checkpoint) == 1 else args.checkpoint
        write_json_atomic({"checkpoint": checkpoint, "split": args.split, "rows": rows}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
