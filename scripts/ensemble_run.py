"""An ensemble trained to one time budget, then evaluated: N runs of one config (seeds 0..N-1), one after
the other, and their ensemble (detkit.modeling.ensemble) on the validation split, all within
``--time-budget`` minutes of wall time.

    python -m scripts.ensemble_run --config configs/bccd_recipe.yaml --members 2 --time-budget 81.2 \\
        --reserve 6 --output-dir runs/final_ens "data.train.splits=[trainval]" "data.val.splits=[test]"

Member i trains with ``train.time_budget`` = (the minutes left of the budget - ``--reserve``) / (the
members left), so a member that ends early leaves its minutes to the next. ``--reserve`` minutes are kept
for the ensemble's evaluation: measure one on your machine (``detkit eval`` with one ``--checkpoint`` per
member) and round up. The first member evaluates as its config says (its curve is the run's time to
accuracy); the others evaluate only at the end (``train.eval_every=0``) and spend those minutes training.
Every member keeps its evaluated weights (``train.keep_evaluated=true``); the ensemble is of each member's
last evaluated weights, not of the best ones on the validation split, which would choose by the split
that is reported.

Writes ``<output-dir>/member_<i>/`` (a run folder each, its log ``member_<i>.log`` beside it),
``<output-dir>/ensemble/eval.json`` and ``<output-dir>/ensemble_run.json``: per member its seed, budget,
wall minutes and final metrics; the ensemble's evaluation minutes and metrics; the total wall minutes.
Extra ``key=value`` arguments go to every member's ``detkit train``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import time
from typing import Callable, List, Sequence

from detkit.atomic_io import write_json_atomic

EVALUATED = re.compile(r"epoch_(\d+)\.pt$")


def member_budget(budget_min: float, spent_min: float, reserve_min: float, members_left: int) -> float:
    """Minutes for the next member: an equal share of what is left of the budget after the reserve.

    >>> member_budget(81.0, 0.0, 6.0, 2)
    37.5
    >>> member_budget(81.0, 36.0, 6.0, 1)
    39.0
    """
    if members_left < 1:
        raise ValueError(f"members_left must be >= 1, got {members_left}")
    share = (budget_min - reserve_min - spent_min) / members_left
    if share <= 0:
        raise ValueError(f"no time left for the next member: {spent_min:.1f} of {budget_min:.1f} min spent, "
                         f"{reserve_min:.1f} kept for the ensemble's evaluation")
    return share


def last_evaluated(run_dir: str) -> str:
    """The weights of a run's last evaluation, ``evaluated/epoch_NNN.pt`` with the largest NNN."""
    found = [(int(m.group(1)), path) for path in glob.glob(os.path.join(run_dir, "evaluated", "epoch_*.pt"))
             if (m := EVALUATED.search(path))]
    if not found:
        raise FileNotFoundError(f"{run_dir} has no evaluated/epoch_NNN.pt: train it with train.keep_evaluated=true")
    return max(found)[1]


def _metrics(path: str) -> dict:
    with open(path) as f:
        data = json.load(f)
    return {"coco": data["coco"], "per_class": {k: v["AP"] for k, v in data.get("per_class", {}).items()}}


def _run(cmd: Sequence[str], log_path: str) -> float:
    """Run ``cmd`` with its output in ``log_path``; its wall minutes. Raises RuntimeError if it fails."""
    start = time.perf_counter()
    with open(log_path, "w") as log:
        code = subprocess.run(list(cmd), stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed (exit {code}): see {log_path}")
    return (time.perf_counter() - start) / 60


def ensemble_run(config: str, output_dir: str, *, members: int, budget_min: float, reserve_min: float,
                 overrides: Sequence[str] = (), first_seed: int = 0, log: Callable[[str], None] = print) -> dict:
    """Train ``members`` runs one after the other within the budget, evaluate their ensemble; the summary."""
    if members < 2:
        raise ValueError(f"--members {members}: an ensemble has at least 2 members")
    os.makedirs(output_dir, exist_ok=True)
    start = time.perf_counter()
    rows: List[dict] = []
    for i in range(members):
        spent = (time.perf_counter() - start) / 60
        budget = member_budget(budget_min, spent, reserve_min, members - i)
        folder = os.path.join(output_dir, f"member_{i}")
        cmd = [sys.executable, "-m", "detkit", "train", "--config", config, "--output-dir", folder, *overrides,
               f"train.seed={first_seed + i}", "train.keep_evaluated=true", f"train.time_budget={budget:.2f}"]
        if i > 0:
            cmd.append("train.eval_every=0")
        log(f"member {i}: seed {first_seed + i}, {budget:.1f} min ({spent:.1f} min spent)")
        minutes = _run(cmd, folder + ".log")
        weights = last_evaluated(folder)
        rows.append({"folder": folder, "seed": first_seed + i, "budget_min": budget, "wall_min": minutes,
                     "weights": weights, **_metrics(os.path.join(folder, "eval.json"))})
        log(f"member {i}: {minutes:.1f} min, mAP {rows[-1]['coco']['mAP']:.4f} ({os.path.basename(weights)})")
    out = os.path.join(output_dir, "ensemble")
    cmd = [sys.executable, "-m", "detkit", "eval", "--output-dir", out, "--quiet"]
    for row in rows:
        cmd += ["--checkpoint", row["weights"]]
    eval_min = _run(cmd, os.path.join(output_dir, "ensemble.log"))
    total = (time.perf_counter() - start) / 60
    summary = {"config": config, "overrides": list(overrides), "budget_min": budget_min, "reserve_min": reserve_min,
               "members": rows, "ensemble": {"eval_min": eval_min, **_metrics(os.path.join(out, "eval.json"))},
               "total_min": total}
    write_json_atomic(summary, os.path.join(output_dir, "ensemble_run.json"))
    coco = summary["ensemble"]["coco"]
    log(f"ensemble of {members}: mAP {coco['mAP']:.4f} AP75 {coco['AP75']:.4f}; evaluation {eval_min:.1f} min; "
        f"total {total:.1f} of {budget_min:.1f} min")
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--time-budget", type=float, required=True, help="minutes of wall time for everything")
    parser.add_argument("--reserve", type=float, required=True,
                        help="minutes kept for the ensemble's evaluation at the end")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="passed to every member's detkit train")
    args = parser.parse_args(argv)
    try:
        ensemble_run(args.config, args.output_dir, members=args.members, budget_min=args.time_budget,
                     reserve_min=args.reserve, overrides=args.overrides, first_seed=args.first_seed)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
