"""Summarise finished training runs (e.g. the BCCD P1 runs) as Markdown, from their output folders.

Reads each run's config.yaml (anchor mode, seed), metrics.jsonl (per-epoch speed and loss, every
evaluation) and eval.json (final COCO metrics, per-class AP), and prints:

- one summary table, a row per run: mAP, AP50, AP75, per-class AP, training images/s, compute time;
- per run, the metrics.jsonl summary: a line per epoch (mean loss, images/s, seconds) and a line per
  evaluation (mAP, AP50, AP75, per-class AP).

    python -m scripts.p1_report runs/p1_manual runs/p1_kmeans [--reference 0.584] \
        [--base configs/bccd_r18_fpn.yaml]

With ``--base``, a "changes" column lists each run's config values that differ from that config
(besides the anchor mode and seed, which have their own columns, and the output folder and resolved
anchor shapes, which always differ): the settings each run tried. A key that a run's config.yaml
predates (the run's code had no such setting) reads as that key's current default in the column, so
a note under the table names those keys per run: for a setting added later and on by default (e.g.
``eval.precise_bn_batches``), "none" in the column does not mean the run used it.

The time column is the run's compute time: the seconds of every training epoch plus every
evaluation (with its precise-BatchNorm pass), each evaluation timed from the record logged just before
it. Unlike last-record-minus-first-record, it stays right for a run stopped and resumed in a later
session, whose log spans the gap. It leaves out the start-up before the first iteration (data scan,
anchor fitting: seconds) and any work lost to a stop after the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

from detkit.config import config_to_dict, load_config, read_config_file
from scripts.run_records import read_run_records


def load_run(run_dir: str) -> dict:
    """The parts of a run folder the report needs; a clear error when the run is not finished."""
    needed = ("config.yaml", "metrics.jsonl", "eval.json")
    missing = [name for name in needed if not os.path.isfile(os.path.join(run_dir, name))]
    if missing:
        raise SystemExit(f"{run_dir}: missing {', '.join(missing)} (is the run finished? "
                         f"a run folder holds {', '.join(needed)})")
    config_path = os.path.join(run_dir, "config.yaml")
    written = read_config_file(config_path)
    # The keys as written, apart from the Config, where keys the run predates hold today's defaults.
    written_keys = set(_flatten(written))
    cfg = load_config(config_path)
    records = read_run_records(run_dir)
    with open(os.path.join(run_dir, "eval.json"), encoding="utf-8") as f:
        final = json.load(f)
    return {"dir": run_dir, "cfg": cfg, "written_keys": written_keys, "records": records, "final": final}


# Keys that differ between runs without being an experimental setting, or that have a column.
_NOT_A_CHANGE = ("output.dir", "model.anchors.shapes", "model.anchors.mode", "train.seed")


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_changes(cfg, base) -> list[str]:
    """``key=value`` for every setting of ``cfg`` that differs from ``base`` (both Config objects)."""
    mine, theirs = _flatten(config_to_dict(cfg)), _flatten(config_to_dict(base))
    return [f"{key}={_yaml_value(mine[key])}" for key in sorted(mine)
            if key not in _NOT_A_CHANGE and mine[key] != theirs.get(key)]


def predated_keys(run: dict, base) -> list[str]:
    """The settings of ``base`` that the run's config.yaml does not hold: its code predates them."""
    return sorted(key for key in _flatten(config_to_dict(base))
                  if key not in run["written_keys"] and key not in _NOT_A_CHANGE)


def _yaml_value(value) -> str:
    """A value as it would be typed in a ``key=value`` override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def compute_seconds(records: list) -> float:
    """Training epochs plus evaluations, in seconds; gaps between sessions of a resumed run do not count."""
    total = 0.0
    for previous, record in zip([None] + records[:-1], records):
        if record["type"] == "epoch":
            total += record["seconds"]
        elif record["type"] == "eval" and previous is not None:
            total += record["time"] - previous["time"]
    return total


def run_summary(run: dict, base=None) -> dict:
    """One row of the summary table; with a ``base`` Config, the run's changes from it."""
    records = run["records"]
    epochs = [r for r in records if r["type"] == "epoch"]
    images = sum(r["seconds"] * r["img_per_s"] for r in epochs)
    seconds = sum(r["seconds"] for r in epochs)
    coco, per_class = run["final"]["coco"], run["final"]["per_class"]
    return {"run": os.path.basename(os.path.normpath(run["dir"])), "anchors": run["cfg"].model.anchors.mode,
            "seed": run["cfg"].train.seed, "mAP": coco["mAP"], "AP50": coco["AP50"], "AP75": coco["AP75"],
            "per_class": {name: v["AP"] for name, v in per_class.items()},
            "img_per_s": images / seconds if seconds else float("nan"), "time_s": compute_seconds(records),
            "changes": None if base is None else config_changes(run["cfg"], base),
            "predates": None if base is None else predated_keys(run, base)}


def summary_table(rows: list, reference: float | None) -> str:
    classes = sorted({name for row in rows for name in row["per_class"]})
    head = ["run", "anchors", "seed", "mAP", "AP50", "AP75"] + [f"AP {c}" for c in classes] + ["train img/s", "time"]
    with_changes = any(row.get("changes") is not None for row in rows)
    if with_changes:
        head.insert(3, "changes")
    if reference is not None:
        head.insert(5 if with_changes else 4, "vs ref")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["run"], row["anchors"], str(row["seed"]), f"{row['mAP']:.3f}", f"{row['AP50']:.3f}",
                 f"{row['AP75']:.3f}"] + [f"{row['per_class'].get(c, float('nan')):.3f}" for c in classes] + \
                [f"{row['img_per_s']:.2f}", _minutes(row["time_s"])]
        if with_changes:
            cells.insert(3, ", ".join(f"`{c}`" for c in row.get("changes") or []) or "none")
        if reference is not None:
            cells.insert(5 if with_changes else 4, f"{row['mAP'] - reference:+.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    predating = [row for row in rows if row.get("predates")]
    if predating:
        lines.append("")
        lines += [f"- {row['run']}: its config.yaml predates " + ", ".join(f"`{k}`" for k in row["predates"])
                  + " (read as today's defaults in the changes column)" for row in predating]
    return "\n".join(lines)


def metrics_log_summary(run: dict) -> str:
    """A line per epoch and per evaluation, condensed from metrics.jsonl."""
    records = run["records"]
    lines = [f"{os.path.basename(os.path.normpath(run['dir']))} (metrics.jsonl, condensed):", "```"]
    for r in records:
        if r["type"] == "epoch":
            losses = [t["loss"] for t in records if t["type"] == "train" and t["epoch"] == r["epoch"]]
            mean_loss = statistics.fmean(losses) if losses else float("nan")
            lines.append(f"epoch {r['epoch']:>2}  iter {r['iteration']:>5}  mean logged loss {mean_loss:.3f}  "
                         f"{r['img_per_s']:.2f} img/s  {r['seconds']:.0f} s")
        elif r["type"] == "eval":
            per_class = "  ".join(f"{k} {v:.3f}" for k, v in sorted(r.get("per_class_AP", {}).items()))
            lines.append(f"  eval @ epoch {r['epoch']:>2}: mAP {r['mAP']:.3f}  AP50 {r['AP50']:.3f}  "
                         f"AP75 {r['AP75']:.3f}" + (f"  |  {per_class}" if per_class else ""))
    lines.append("```")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run output folders")
    parser.add_argument("--reference", type=float, default=None,
                        help="a reference mAP (e.g. torchvision's 0.584 under P1) for a difference column")
    parser.add_argument("--base", default=None, metavar="CONFIG",
                        help="a config (e.g. configs/bccd_r18_fpn.yaml) to list each run's changes from")
    args = parser.parse_args(argv)
    runs = [load_run(d) for d in args.runs]
    base = None if args.base is None else load_config(args.base)
    print(summary_table([run_summary(r, base) for r in runs], args.reference))
    for run in runs:
        print()
        print(metrics_log_summary(run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
