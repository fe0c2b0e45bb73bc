"""Time to accuracy of training runs: each evaluation's mAP on a held-out split against wall time.

A run trained with ``train.keep_evaluated=true`` (``configs/bccd_recipe.yaml`` sets it to false: pass
it on the command line) keeps the weights of every evaluation as ``evaluated/epoch_NNN.pt``. This
script evaluates each of them on
``--split`` (a split no choice was tuned on, e.g. BCCD's test), next to the validation mAP the run
logged, and prints per run a Markdown table and the first evaluation that reaches ``--target``:

    python -m scripts.recipe_report runs/recipe_12ep runs/recipe_36ep --split test --target 0.584 \
        --reference 77:0.584 --plot benchmarks/results/recipe_curve.png

The minutes of an evaluation are the run's compute time up to the end of it (training epochs plus
evaluations, as ``p1_report.py`` counts them), plus the set-up before the first iteration when the
run's log gives it (``--log NAME`` in the run folder or beside it as ``<run>.log``; the trainer prints
``wall time`` at the end of a run, and its set-up is that minus the compute time). The held-out
evaluation runs after training, so it is not in the minutes; each evaluation of the run itself is.

Results are cached in ``evaluated/<split>/epoch_NNN.json``: a rerun evaluates only new checkpoints.
``--reference-run [LABEL=]DIR`` (repeatable) draws another run's logged evaluations as they are, e.g. a run of
``train_torchvision_p1.py`` whose config evaluates on that split; ``--reference [LABEL=]MIN:MAP``
marks a single result.

Run folders do not outlive the machine they trained on, so ``--json FILE`` writes the curves and
``--from-json FILE`` (repeatable) reads such a file back: a committed results file redraws the plot,
alone or next to new runs, without the weights it was computed from.

    python -m scripts.recipe_report --from-json benchmarks/results/recipe_curves.json --split test \
        --plot benchmarks/results/recipe_curve.png
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

from scripts.run_records import read_run_records

_WALL = re.compile(r"wall time ([0-9.]+) min")


def eval_minutes(records: list) -> dict:
    """{completed epochs: compute minutes at the end of that evaluation} from a run's metrics.jsonl.

    The compute time up to an evaluation is the seconds of every epoch up to and including the
    evaluated one, plus the duration of every evaluation so far (from the record logged just before
    it), so a resumed run's gap between sessions does not count. The trainer logs an evaluated epoch's
    own record after its evaluation: that epoch's seconds still count before the evaluation. When the
    record before an evaluation is a training one, the epoch's iterations after it (fewer than
    ``train.log_every``) are in both the epoch's seconds and the gap to the evaluation; they are taken
    out of the gap at the epoch's mean iteration time where the records carry iteration numbers (up to
    half a minute per evaluation otherwise: 1.5 min over the 8 evaluations of an 81-min run)."""
    epoch_seconds, eval_seconds, epoch_end_iteration, epoch_iterations = {}, {}, {}, {}
    last_train_iteration, previous_epoch_end = {}, None
    for previous, record in zip([None] + records[:-1], records):
        if record["type"] == "epoch":
            epoch = int(record["epoch"])
            epoch_seconds[epoch] = record["seconds"]  # a redone epoch: its last session's
            if "iteration" in record:
                epoch_end_iteration[epoch] = int(record["iteration"])
                start = 0 if epoch == 1 else previous_epoch_end
                if start is not None and epoch_end_iteration[epoch] > start:
                    epoch_iterations[epoch] = epoch_end_iteration[epoch] - start
                previous_epoch_end = epoch_end_iteration[epoch]
        elif record["type"] == "eval" and previous is not None:
            eval_seconds[int(record["epoch"])] = record["time"] - previous["time"]
            if previous["type"] == "train" and "iteration" in previous:
                last_train_iteration[int(record["epoch"])] = int(previous["iteration"])
    for epoch, iteration in last_train_iteration.items():
        if epoch in epoch_iterations:  # the epoch's own record tells where it ended and how long it took
            tail = epoch_end_iteration[epoch] - iteration
            eval_seconds[epoch] -= tail * epoch_seconds[epoch] / epoch_iterations[epoch]
    evaluated = sorted({int(r["epoch"]) for r in records if r["type"] == "eval"})
    return {epoch: (sum(v for e, v in epoch_seconds.items() if e <= epoch)
                    + sum(v for e, v in eval_seconds.items() if e <= epoch)) / 60 for epoch in evaluated}


def setup_minutes(run_dir: str, records: list) -> float:
    """The set-up before the first iteration, from the trainer's ``wall time`` line; 0 without a log."""
    candidates = [os.path.join(run_dir, "train.log"), os.path.normpath(run_dir) + ".log"]
    for path in candidates:
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                found = _WALL.findall(f.read())
            if found:
                compute = max(eval_minutes(records).values(), default=0.0)
                return max(float(found[-1]) - compute, 0.0)
    return 0.0


def evaluate_kept(run_dir: str, split: str) -> dict:
    """{epoch: metrics} of every evaluated/epoch_NNN.pt on ``split``, evaluated once and cached."""
    from detkit.evaluation.evaluate import evaluate_checkpoint

    results = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "evaluated", "epoch_*.pt"))):
        epoch = int(re.search(r"epoch_(\d+)\.pt$", path).group(1))
        cache = os.path.join(run_dir, "evaluated", split, f"epoch_{epoch:03d}.json")
        if not os.path.isfile(cache):
            out = os.path.join(run_dir, "evaluated", split, f"epoch_{epoch:03d}")
            metrics = evaluate_checkpoint(path, split=split, output_dir=out, progress=False, log=lambda *_: None)
            os.makedirs(os.path.dirname(cache), exist_ok=True)
            with open(cache, "w", encoding="utf-8") as f:
                json.dump({"coco": metrics["coco"],
                           "per_class": {k: v["AP"] for k, v in metrics["per_class"].items()}}, f)
        with open(cache, encoding="utf-8") as f:
            results[epoch] = json.load(f)
    return results


def run_curve(run_dir: str, split: str) -> dict:
    records = read_run_records(run_dir)
    minutes, setup = eval_minutes(records), setup_minutes(run_dir, records)
    logged = {int(r["epoch"]): r for r in records if r["type"] == "eval"}
    held_out = evaluate_kept(run_dir, split)
    if not held_out:
        raise SystemExit(f"{run_dir}: no evaluated/epoch_*.pt (train with train.keep_evaluated=true)")
    points = []
    for epoch in sorted(held_out):
        coco = held_out[epoch]["coco"]
        points.append({"epoch": epoch, "minutes": minutes.get(epoch, float("nan")) + setup,
                       "val_mAP": logged.get(epoch, {}).get("mAP"), "mAP": coco["mAP"], "AP50": coco["AP50"],
                       "AP75": coco["AP75"], "per_class": held_out[epoch]["per_class"]})
    return {"run": os.path.basename(os.path.normpath(run_dir)), "setup_min": setup, "points": points}


def logged_curve(run_dir: str) -> dict:
    """The evaluations a run logged itself (for a reference run that evaluated on the held-out split).

    ``run_dir`` may be ``LABEL=DIR``: the curve is then named LABEL instead of the folder's name."""
    label = None
    if "=" in run_dir and not os.path.isdir(run_dir):
        label, run_dir = run_dir.split("=", 1)
    records = read_run_records(run_dir)
    minutes, setup = eval_minutes(records), setup_minutes(run_dir, records)
    points = [{"epoch": int(r["epoch"]), "minutes": minutes[int(r["epoch"])] + setup, "val_mAP": None,
               "mAP": r["mAP"], "AP50": r["AP50"], "AP75": r["AP75"], "per_class": r.get("per_class_AP", {})}
              for r in records if r["type"] == "eval"]
    if not points:
        raise SystemExit(f"{run_dir}: metrics.jsonl holds no evaluation")
    return {"run": label or os.path.basename(os.path.normpath(run_dir)), "setup_min": setup, "points": points,
            "reference": True}


def load_curves(path: str) -> list:
    """The curves of a file written by ``--json``, checked enough that a wrong file is a clear error."""
    try:
        with open(path, encoding="utf-8") as f:
            curves = json.load(f)
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"--from-json {path}: cannot read it as JSON ({error})")
    if not isinstance(curves, list):
        raise SystemExit(f"--from-json {path}: expected a list of curves as --json writes it, got "
                         f"{type(curves).__name__}")
    for index, curve in enumerate(curves):
        missing = [key for key in ("run", "setup_min", "points") if not isinstance(curve, dict) or key not in curve]
        if missing:
            raise SystemExit(f"--from-json {path}: curve {index} lacks {', '.join(missing)} "
                             "(each curve needs run, setup_min and points)")
        for point in curve["points"]:
            lacking = [key for key in ("epoch", "minutes", "mAP", "AP50", "AP75") if key not in point]
            if lacking:
                raise SystemExit(f"--from-json {path}: a point of {curve['run']!r} lacks {', '.join(lacking)}")
            point.setdefault("val_mAP", None)
            point.setdefault("per_class", {})
    return curves


def markdown(curve: dict, split: str, target: float | None) -> str:
    classes = sorted({name for p in curve["points"] for name in p["per_class"]})
    head = ["epoch", "minutes", "val mAP", f"{split} mAP", "AP50", "AP75"] + [f"AP {c}" for c in classes]
    lines = [f"{curve['run']} (set-up {curve['setup_min']:.1f} min included in the minutes):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in curve["points"]:
        val = "" if p["val_mAP"] is None else f"{p['val_mAP']:.3f}"
        cells = [str(p["epoch"]), f"{p['minutes']:.1f}", val, f"{p['mAP']:.3f}", f"{p['AP50']:.3f}",
                 f"{p['AP75']:.3f}"] + [f"{p['per_class'].get(c, float('nan')):.3f}" for c in classes]
        lines.append("| " + " | ".join(cells) + " |")
    if target is not None:
        hit = next((p for p in curve["points"] if p["mAP"] >= target), None)
        lines += ["", f"first evaluation at {split} mAP >= {target}: " +
                  (f"epoch {hit['epoch']}, {hit['minutes']:.1f} min" if hit else
                   f"none (best {max(p['mAP'] for p in curve['points']):.3f})")]
    return "\n".join(lines)


REFERENCE_STYLES = [("s", "black"), ("^", "dimgray"), ("D", "darkgray"), ("v", "silver")]


def reference_style(index: int) -> dict:
    """Line style of the index-th reference run: dashed and grey-scale, so that the runs being reported
    keep matplotlib's colours, with a marker and shade of its own per reference so that several (a
    torchvision run and an earlier recipe) stay apart in the plot and its legend."""
    marker, color = REFERENCE_STYLES[index % len(REFERENCE_STYLES)]
    return {"marker": marker, "linestyle": "--", "color": color}


def plot(curves: list, references: list, split: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    references_drawn = 0
    for curve in curves:
        if curve.get("reference", False):
            style = reference_style(references_drawn)
            references_drawn += 1
        else:
            style = {"marker": "o", "linestyle": "-"}
        ax.plot([p["minutes"] for p in curve["points"]], [p["mAP"] for p in curve["points"]],
                label=curve["run"], **style)
    for label, minutes, value in references:
        ax.scatter([minutes], [value], marker="*", s=160, color="black", zorder=3)
        ax.axhline(value, color="black", linestyle=":", linewidth=1)
        ax.annotate(f"{label} {value:.3f} @ {minutes:.0f} min", (minutes, value), textcoords="offset points",
                    xytext=(-10, 8), ha="right")
    ax.set_xlabel("wall time (min)")
    ax.set_ylabel(f"{split} mAP (COCO 0.5:0.95)")
    ax.set_xlim(left=0)  # time to accuracy: from the start of the run
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _reference(text: str) -> tuple:
    label, _, rest = text.rpartition("=")
    try:
        minutes, value = (float(x) for x in rest.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--reference {text!r}: expected [LABEL=]MINUTES:MAP, e.g. 77:0.584")
    return (label or "torchvision P1", minutes, value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders trained with train.keep_evaluated=true")
    parser.add_argument("--split", default="test", help="the held-out VOC split to evaluate on (default test)")
    parser.add_argument("--target", type=float, default=None, help="report the first evaluation reaching it")
    parser.add_argument("--reference", type=_reference, action="append", default=[],
                        help="[LABEL=]MINUTES:MAP of another system, drawn on the plot")
    parser.add_argument("--reference-run", action="append", default=[],
                        help="[LABEL=]DIR: a run folder whose logged evaluations are drawn as they are")
    parser.add_argument("--from-json", action="append", default=[],
                        help="curves written earlier by --json, drawn and printed with the others")
    parser.add_argument("--plot", default=None, help="write the curve as this PNG")
    parser.add_argument("--json", default=None, help="also write the curves as JSON")
    args = parser.parse_args(argv)
    if not (args.runs or args.reference_run or args.from_json):
        parser.error("give at least one run folder, --reference-run or --from-json")
    curves = [curve for path in args.from_json for curve in load_curves(path)]
    curves += [run_curve(run, args.split) for run in args.runs] + [logged_curve(r) for r in args.reference_run]
    print("\n\n".join(markdown(c, args.split, args.target) for c in curves))
    if args.plot:
        plot(curves, args.reference, args.split, args.plot)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(curves, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
