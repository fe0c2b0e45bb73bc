"""Kill-safety: a tiny run SIGKILLed at random moments and resumed each time must end as if never killed.

The tiny synthetic setting of the engine tests (``tests/engine/conftest.py: tiny_overrides`` on the
config defaults: 2 epochs of 4 iterations, bf16 where the CPU has it, an evaluation after each
epoch) is trained with ``tools/train.py`` in subprocesses:

  1. once uninterrupted (``reference/``), timing its phases: setup, epochs, checkpoint writes, evaluations;
  2. again in ``killed-1/``, SIGKILLed and restarted after each kill until it finishes: with
     ``--resume`` when a last.pt exists, fresh (no ``--resume``, which stops with "no checkpoint to
     resume from") before the first one. Should a run finish before ``--kills`` kills have landed,
     the rest go to another run (``killed-2/``, ...), verified the same way.

The kills cycle through four kinds, in an order and with placements drawn from ``--seed``:

  random      after a delay drawn uniformly over the attempt's expected duration, setup included
              (the reference's, less the share of the iterations its last.pt already holds)
  checkpoint  inside a checkpoint write: once a temporary file (``.last.pt.*.tmp``, ``.best.pt.*.tmp``)
              appears, after a drawn fraction of the reference's write time
  evaluation  inside an evaluation: once last.pt has been replaced after "BatchNorm statistics
              re-estimated" (or at that line, for a run resumed with only its final evaluation left),
              after a drawn fraction of the reference's evaluation time
  eval-line   right as the log prints an "eval at epoch" line (best.pt and the eval record are written,
              the epoch record and the next epoch come next)

Where each kill landed (the phase) is read from what the process had printed, metrics.jsonl and the
temporary files present at that moment.

Required (a failure exits 1): after every kill each ``*.pt`` of the run folder loads with
``load_checkpoint``; each finished run's last.pt "model" tensors equal the reference's bit for bit
(``torch.equal``); its metrics.jsonl holds each training iteration's record once, in the reference's
order, and no torn line. Findings (failures only with ``--strict``): epoch and eval records missing or
repeated against the reference, temporary files that the kills left in the run folder, best.pt and
eval.json against the reference.

    python -m scripts.check_kill_resume [--kills 8] [--seed 0] [--epochs 2] [--output-dir DIR]
                                        [--json FILE] [--strict]

Without ``--output-dir`` everything goes to a temporary folder, removed at the end; with it, the runs
and one log per attempt (``logs/``, each line with its second since the process started) are kept.
"""

import argparse
import glob
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from detkit.atomic_io import write_json_atomic
from detkit.weights.checkpoint import load_checkpoint
from tests.engine.conftest import tiny_overrides  # the settings the engine tests train with

REPO = Path(__file__).resolve().parents[1]

KINDS = ("random", "checkpoint", "evaluation", "eval-line")
POLL_S = 0.004
BN_LINE, EVAL_LINE, BATCH_LINE = "BatchNorm statistics re-estimated", "eval at epoch", "batch:"


# --------------------------------------------------------------------------- the run folder, as seen from outside
def temp_files(run_dir: str) -> Dict[str, int]:
    """The atomic writers' temporary files in the run folder (``.NAME.XXXXXXXX.tmp``): name -> size."""
    found = {}
    try:
        with os.scandir(run_dir) as entries:
            for entry in entries:
                if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                    try:
                        found[entry.name] = entry.stat().st_size
                    except FileNotFoundError:  # renamed meanwhile
                        pass
    except FileNotFoundError:
        pass
    return found


def written_file(temp_name: str) -> str:
    """``.last.pt.k2j3x9q1.tmp`` -> ``last.pt``: the file that temporary file becomes."""
    return temp_name[1:-len(".tmp")].rsplit(".", 1)[0]


def file_identity(path: str):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def read_records(path: str) -> Tuple[List[dict], int]:
    """metrics.jsonl's records, and how many of its lines are not JSON (torn by a kill)."""
    records, torn = [], 0
    if not os.path.exists(path):
        return records, torn
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    torn += 1
    return records, torn


def check_checkpoints(run_dir: str) -> Tuple[Dict[str, Optional[dict]], List[str]]:
    """Load every ``*.pt`` of the run folder: name -> {epoch, iteration} (None: unreadable), and the errors."""
    found, errors = {}, []
    for path in sorted(glob.glob(os.path.join(run_dir, "*.pt"))):
        name = os.path.basename(path)
        try:
            ckpt = load_checkpoint(path)
        except Exception as exc:  # any failure to read is what is counted
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            found[name] = None
        else:
            found[name] = {"epoch": int(ckpt["epoch"]), "iteration": int(ckpt["iteration"])}
    return found, errors


# --------------------------------------------------------------------------- one attempt, watched
@dataclass
class KillPlan:
    """When to kill an attempt: ``kind`` (one of KINDS) and a draw ``u`` in [0, 1) placing it."""

    kind: str
    u: float


@dataclass
class Attempt:
    """One ``tools/train.py`` process as it was watched; every time in seconds since it started."""

    run: int
    index: int
    resume: bool
    start_iteration: Optional[int]  # last.pt's iteration when it started (None: no last.pt)
    lines: List[Tuple[float, str]] = field(default_factory=list)
    temp_events: List[Tuple[float, str, str]] = field(default_factory=list)  # (t, "appear" | "vanish", name)
    last_replaced: List[float] = field(default_factory=list)  # when last.pt was replaced
    killed_at: Optional[float] = None
    phase: Optional[str] = None  # where the kill landed (phase_at)
    timed_out: bool = False
    returncode: Optional[int] = None
    seconds: float = 0.0
    wall_start: float = 0.0  # time.time() at the start, to tell this attempt's metrics records from earlier ones

    def first_line(self, prefix: str, after: float = -1.0) -> Optional[float]:
        return next((t for t, text in list(self.lines) if text.startswith(prefix) and t >= after), None)


def watch(cmd: List[str], run_dir: str, attempt: Attempt, due: Callable[[Attempt], Optional[float]],
          epochs: int, timeout_s: float) -> Attempt:
    """Run ``cmd``, recording its lines and the run folder's events, and SIGKILL it at ``due(attempt)``
    (seconds, or None while the moment is not known yet)."""
    t0, attempt.wall_start = time.monotonic(), time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)

    def read() -> None:
        for line in proc.stdout:
            attempt.lines.append((time.monotonic() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stale = set(temp_files(run_dir))  # left by earlier kills: not this attempt's writes
    seen: Dict[str, int] = {}
    last_id = file_identity(os.path.join(run_dir, "last.pt"))
    while True:
        now = time.monotonic() - t0
        current = {name: size for name, size in temp_files(run_dir).items() if name not in stale}
        attempt.temp_events += [(now, "appear", name) for name in current.keys() - seen.keys()]
        attempt.temp_events += [(now, "vanish", name) for name in seen.keys() - current.keys()]
        seen = current
        identity = file_identity(os.path.join(run_dir, "last.pt"))
        if identity != last_id:
            attempt.last_replaced.append(now)
            last_id = identity
        if proc.poll() is not None:
            break
        when = due(attempt)
        if when is not None and now >= when:
            attempt.phase = phase_at(attempt, current, epochs, run_dir)
            os.kill(proc.pid, signal.SIGKILL)
            attempt.killed_at = now
            break
        if now > timeout_s:
            os.kill(proc.pid, signal.SIGKILL)
            attempt.timed_out = True
            break
        time.sleep(POLL_S)
    attempt.returncode = proc.wait()
    reader.join(timeout=10)
    attempt.seconds = time.monotonic() - t0
    return attempt


def iterations_of(attempt: Attempt) -> Tuple[int, int]:
    """(per epoch, in all) from the attempt's line "batch: ...; 4 iterations per epoch, 8 in all"."""
    head = next((text for _, text in list(attempt.lines) if text.startswith(BATCH_LINE)), None)
    if head is None:
        return 1, 1
    return int(head.split(";")[1].split()[0]), int(head.split(",")[-1].split()[0])


def resumed_epoch(attempt: Attempt) -> int:
    """How many epochs the last.pt the attempt started from holds."""
    return (attempt.start_iteration or 0) // iterations_of(attempt)[0]


def phase_at(attempt: Attempt, writing_now: Dict[str, int], epochs: int, run_dir: str) -> str:
    """What the process was doing now, from its lines so far, metrics.jsonl and the temporary files."""
    phase = "setup (imports, data, model" + (", resume)" if attempt.resume else ")")
    epoch, bn_at, training = None, None, False
    for t, text in list(attempt.lines):
        training = text.startswith(BATCH_LINE)
        if text.startswith("epoch ") and "/" in text.split(":")[0]:  # the progress hook's end-of-epoch line
            epoch = int(text.split()[1].split("/")[0])
            phase = f"end of epoch {epoch}: precise BatchNorm"
        elif text.startswith(BN_LINE):
            bn_at = t
            phase = f"end of epoch {epoch}: last.pt" if epoch else "final evaluation"
        elif text.startswith(EVAL_LINE):
            training = int(text.split()[3].rstrip(":")) < epochs
            phase = "after the final evaluation: eval.json, detections.json"
        elif text.startswith("COCO metrics"):
            phase = "final outputs: tables, plots"
    if training:  # this attempt's latest record says where in the epochs it is
        records = [r for r in read_records(os.path.join(run_dir, "metrics.jsonl"))[0]
                   if r.get("time", 0) >= attempt.wall_start]
        last = records[-1] if records else {"type": "epoch", "epoch": resumed_epoch(attempt)}
        phase = {"train": lambda: f"training epoch {last['epoch']} (iteration {last['iteration']} logged)",
                 "eval": lambda: f"after the evaluation of epoch {last['epoch']}, before its epoch record",
                 "epoch": lambda: f"start of epoch {last['epoch'] + 1}, before its first step"}[last["type"]]()
    if phase.endswith("last.pt") and bn_at is not None and any(t >= bn_at for t in attempt.last_replaced):
        phase = f"evaluation of epoch {epoch}"
    writing = sorted({written_file(name) for name in writing_now})
    if phase.endswith("last.pt") and "last.pt" not in writing:
        phase = phase[:-len("last.pt")] + "building the last.pt state"
    return f"writing {', '.join(writing)} ({phase})" if writing else phase


# --------------------------------------------------------------------------- the reference's timeline
@dataclass
class Timing:
    """What the uninterrupted run took (seconds)."""

    setup_s: float  # process start -> the "batch:" line
    total_s: float  # process start -> exit
    iters_per_epoch: int
    total_iters: int
    write_s: Dict[str, float]  # file -> its shortest write (temporary file seen -> renamed)
    eval_s: Dict[int, float]  # epoch -> last.pt replaced -> best.pt write begins or the "eval at epoch" line

    def expected_attempt_s(self, attempt: Attempt) -> float:
        """An attempt's duration: its setup (the reference's until its own is seen), then the share of
        the reference's work that last.pt does not hold yet (at least a fifth: the final evaluation)."""
        setup = attempt.first_line(BATCH_LINE)
        done = (attempt.start_iteration or 0) / max(self.total_iters, 1)
        return (setup if setup is not None else self.setup_s) + (self.total_s - self.setup_s) * max(1 - done, 0.2)

    def evaluation_s(self, epoch: int) -> float:
        return self.eval_s.get(epoch, max(self.eval_s.values(), default=0.5))


def measure(ref: Attempt) -> Timing:
    per_epoch, total = iterations_of(ref)
    write_s: Dict[str, float] = {}
    opened: Dict[str, float] = {}
    for t, what, name in ref.temp_events:
        if what == "appear":
            opened[name] = t
        elif name in opened:
            write_s[written_file(name)] = min(write_s.get(written_file(name), math.inf), t - opened.pop(name))
    eval_s = {}
    for t, text in ref.lines:
        if text.startswith(EVAL_LINE):
            start = max((r for r in ref.last_replaced if r <= t), default=None)
            best = [e for e, what, name in ref.temp_events if what == "appear" and written_file(name) == "best.pt"
                    and start is not None and start <= e <= t]
            if start is not None:
                eval_s[int(text.split()[3].rstrip(":"))] = min(best + [t]) - start
    return Timing(setup_s=ref.first_line(BATCH_LINE), total_s=ref.seconds,
                  iters_per_epoch=per_epoch, total_iters=total, write_s=write_s, eval_s=eval_s)


def kill_time(plan: KillPlan, attempt: Attempt, timing: Timing) -> Optional[float]:
    """When ``plan`` kills ``attempt``: seconds since it started, or None until the event that places it."""
    if plan.kind == "random":
        return plan.u * timing.expected_attempt_s(attempt)
    if plan.kind == "checkpoint":
        writes = [(t, written_file(name)) for t, what, name in attempt.temp_events
                  if what == "appear" and written_file(name).endswith(".pt")]
        return writes[0][0] + plan.u * 0.8 * timing.write_s.get(writes[0][1], 0.0) if writes else None
    if plan.kind == "evaluation":
        bn = attempt.first_line(BN_LINE)
        if bn is None:
            return None
        epoch = (attempt.start_iteration or 0) // max(timing.iters_per_epoch, 1) + 1
        if (attempt.start_iteration or 0) >= timing.total_iters:  # resumed with only the final evaluation left
            start = bn
        else:
            start = next((t for t in attempt.last_replaced if t >= bn), None)
        last_epoch = timing.total_iters // max(timing.iters_per_epoch, 1)
        return None if start is None else start + plan.u * 0.8 * timing.evaluation_s(min(epoch, last_epoch))
    if plan.kind == "eval-line":
        return attempt.first_line(EVAL_LINE)
    raise ValueError(f"unknown kill kind {plan.kind!r}")


def kill_schedule(kills: int, seed: int) -> List[KillPlan]:
    """``kills`` plans: the four kinds in turn (each round of four shuffled), each with its own draw."""
    rng = random.Random(seed)
    kinds: List[str] = []
    while len(kinds) < kills:
        block = list(KINDS)
        rng.shuffle(block)
        kinds += block
    return [KillPlan(kind, rng.random()) for kind in kinds[:kills]]


# --------------------------------------------------------------------------- checks of a finished run
def compare_records(ref: List[dict], got: List[dict], kind: str) -> dict:
    """The ``kind`` records' (epoch, iteration) against the reference's: missing, repeated, unexpected."""
    def keys(records):
        return [(r.get("epoch"), r.get("iteration")) for r in records if r.get("type") == kind]

    want, have = keys(ref), keys(got)
    return {"expected": len(want), "found": len(have), "in_order": have == want,
            "missing": [list(k) for k in want if k not in have],
            "repeated": [list(k) for k in sorted({k for k in have if have.count(k) > 1})],
            "unexpected": [list(k) for k in have if k not in want]}


def differing_tensors(a: dict, b: dict) -> List[str]:
    """The keys whose tensors are not bit-identical (or exist on one side only)."""
    return sorted(set(a) ^ set(b)) + [k for k in a if k in b and not (a[k].dtype == b[k].dtype and
                                                                       torch.equal(a[k], b[k]))]


def verify_run(ref_dir: Path, run_dir: Path, attempts: List[Attempt]) -> dict:
    """The required checks and the findings of one finished run against the reference."""
    found, errors = check_checkpoints(str(run_dir))
    failures = [f"at the end: {e}" for e in errors]
    findings: List[str] = []
    differing = ["(no readable last.pt)"]
    if found.get("last.pt"):
        differing = differing_tensors(load_checkpoint(ref_dir / "last.pt")["model"],
                                      load_checkpoint(run_dir / "last.pt")["model"])
    if differing:
        failures.append(f"last.pt 'model' differs from the uninterrupted run's in {len(differing)} tensor(s), e.g. "
                        f"{', '.join(differing[:3])}")
    ref_records, _ = read_records(str(ref_dir / "metrics.jsonl"))
    records, torn = read_records(str(run_dir / "metrics.jsonl"))
    train = compare_records(ref_records, records, "train")
    if torn:
        failures.append(f"metrics.jsonl holds {torn} line(s) that are not JSON (torn by a kill)")
    if not train["in_order"]:
        fresh = [a.index for a in attempts[1:] if not a.resume]
        cause = (f"; attempt(s) {fresh} started fresh (no last.pt yet) in the killed attempt's folder and "
                 f"appended to its metrics.jsonl" if fresh else "")
        failures.append(f"metrics.jsonl training records (epoch, iteration) differ from the uninterrupted run's: "
                        f"repeated {train['repeated']}, missing {train['missing']}, unexpected "
                        f"{train['unexpected']}{cause}")
    others = {kind: compare_records(ref_records, records, kind) for kind in ("epoch", "eval")}
    for kind, cmp in others.items():
        if not cmp["in_order"]:
            findings.append(f"metrics.jsonl {kind} records (epoch, iteration): missing {cmp['missing']}, repeated "
                            f"{cmp['repeated']}, against the uninterrupted run's {cmp['expected']}")
    left = temp_files(str(run_dir))
    if left:
        findings.append(f"{len(left)} temporary file(s) left in the run folder by killed writes "
                        f"({sum(left.values()) / 2**20:.0f} MiB): {', '.join(sorted(left))}")
    best_identical = None
    if found.get("best.pt") and (ref_dir / "best.pt").exists():
        ref_best, best = load_checkpoint(ref_dir / "best.pt"), load_checkpoint(run_dir / "best.pt")
        best_identical = not differing_tensors(ref_best["model"], best["model"])
        if not best_identical:
            findings.append(f"best.pt 'model' differs from the uninterrupted run's (its iteration {best['iteration']}"
                            f", the reference's {ref_best['iteration']})")
    eval_identical = None
    if (ref_dir / "eval.json").exists() and (run_dir / "eval.json").exists():
        eval_identical = json.loads((ref_dir / "eval.json").read_text()) == json.loads((run_dir / "eval.json")
                                                                                          .read_text())
        if not eval_identical:
            findings.append("eval.json differs from the uninterrupted run's")
    return {"folder": run_dir.name, "attempts": len(attempts), "final_checkpoints": found, "unreadable": len(errors),
            "weights_identical": not differing, "differing_tensors": differing, "train_records": train,
            "torn_lines": torn, "epoch_records": others["epoch"], "eval_records": others["eval"],
            "temp_files_left": sorted(left), "best_identical": best_identical, "eval_json_identical": eval_identical,
            "failures": failures, "findings": findings}


# --------------------------------------------------------------------------- the check
def train_command(root: Path, run_dir: Path, epochs: int, resume: bool) -> List[str]:
    overrides = tiny_overrides(root, **{"output.dir": str(run_dir), "train.epochs": epochs})
    return [sys.executable, str(REPO / "tools" / "train.py"), "--quiet", "--config", str(root / "defaults.yaml"),
            "--output-dir", str(run_dir), *(["--resume"] if resume else []), *overrides]


def save_log(attempt: Attempt, path: Path) -> None:
    path.write_text("".join(f"{t:8.3f} {text}\n" for t, text in attempt.lines), encoding="utf-8")


def run_check(root: Path, kills: int, seed: int, epochs: int, log: Callable[[str], None] = print) -> dict:
    """Train the reference, then kill and resume runs until ``kills`` kills have landed; the report."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "defaults.yaml").write_text("# the config defaults: the tiny settings come as overrides\n")
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    ref_dir = root / "reference"

    log(f"reference: uninterrupted run in {ref_dir}")
    ref = watch(train_command(root, ref_dir, epochs, False), str(ref_dir), Attempt(0, 0, False, None),
                lambda _: None, epochs, timeout_s=1800)
    save_log(ref, logs / "reference.log")
    if ref.returncode != 0:
        raise SystemExit(f"the uninterrupted run failed (exit {ref.returncode}), see {logs / 'reference.log'}:\n"
                         + "\n".join(text for _, text in ref.lines[-20:]))
    timing = measure(ref)
    log(f"reference: {ref.seconds:.1f} s (setup {timing.setup_s:.1f} s), {timing.total_iters} iterations; writes "
        + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(timing.write_s.items()) if k.endswith(".pt"))
        + "; evaluations " + ", ".join(f"epoch {k} {v:.2f} s" for k, v in sorted(timing.eval_s.items())))

    plans = kill_schedule(kills, seed)
    timeout = max(300.0, 10 * ref.seconds)
    rows: List[dict] = []
    runs: List[dict] = []
    read_failures: List[str] = []
    attempts_total = 0
    while not runs or len(rows) < kills:
        run_dir = root / f"killed-{len(runs) + 1}"
        attempts: List[Attempt] = []
        while True:
            if attempts_total >= 3 * kills + 5:
                raise SystemExit(f"{attempts_total} attempts and {len(rows)} of {kills} kills: giving up")
            last = run_dir / "last.pt"
            resume = last.exists()  # --resume without a last.pt stops with "no checkpoint": start fresh
            start_iteration = (check_checkpoints(str(run_dir))[0].get("last.pt") or {}).get("iteration")
            plan = plans[len(rows)] if len(rows) < kills else None
            if plan is not None and plan.kind == "checkpoint" and start_iteration == timing.total_iters and \
                    (run_dir / "best.pt").exists():
                plan = KillPlan("evaluation", plan.u)  # no checkpoint is written any more: kill the evaluation
            attempt = Attempt(len(runs) + 1, len(attempts) + 1, resume, start_iteration)
            due = (lambda a, p=plan: kill_time(p, a, timing)) if plan else (lambda _: None)
            watch(train_command(root, run_dir, epochs, resume), str(run_dir), attempt, due, epochs, timeout)
            attempts.append(attempt)
            attempts_total += 1
            name = f"run {attempt.run} attempt {attempt.index}"
            save_log(attempt, logs / f"run-{attempt.run}-attempt-{attempt.index:02d}.log")
            start = f"resumed at iteration {start_iteration}" if resume else "fresh start"
            tail = "\n".join(text for _, text in attempt.lines[-20:])
            if attempt.timed_out:
                raise SystemExit(f"{name} ({start}) did not end within {timeout:.0f} s:\n{tail}")
            if attempt.killed_at is None:
                if attempt.returncode != 0:
                    raise SystemExit(f"{name} ({start}) failed with exit {attempt.returncode}:\n{tail}")
                log(f"{name}: {start}, ran to the end in {attempt.seconds:.1f} s"
                    + (f" (its {plan.kind} kill did not come in time)" if plan else ""))
                break
            found, errors = check_checkpoints(str(run_dir))
            read_failures += [f"after kill {len(rows) + 1}: {e}" for e in errors]
            records, _ = read_records(str(run_dir / "metrics.jsonl"))
            logged = [r["iteration"] for r in records if r.get("type") == "train"]
            row = {"kill": len(rows) + 1, "run": attempt.run, "attempt": attempt.index, "started": start,
                   "kind": plan.kind, "at_s": round(attempt.killed_at, 3), "phase": attempt.phase,
                   "iteration_logged": logged[-1] if logged else None,
                   "last_pt_iteration": (found.get("last.pt") or {}).get("iteration"),
                   "checkpoints": {k: (v["iteration"] if v else "UNREADABLE") for k, v in found.items()},
                   "unreadable": len(errors), "temp_files": sorted(temp_files(str(run_dir)))}
            rows.append(row)
            log(f"kill {row['kill']} ({plan.kind}; {name}, {start}) at {attempt.killed_at:.2f} s: {attempt.phase}; "
                f"last.pt now at iteration {row['last_pt_iteration']}, checkpoints {row['checkpoints']}, "
                f"{len(errors)} unreadable")
        runs.append(verify_run(ref_dir, run_dir, attempts))
        runs[-1]["resumes"] = sum(a.resume for a in attempts)
        runs[-1]["fresh_restarts"] = sum(not a.resume for a in attempts[1:])
        runs[-1]["seconds"] = round(sum(a.seconds for a in attempts), 2)

    failures = [f"{len(read_failures)} checkpoint read failure(s) after kills: {'; '.join(read_failures)}"] \
        if read_failures else []
    failures += [f"{r['folder']}: {f}" for r in runs for f in r["failures"]]
    return {
        "seed": seed, "kills_requested": kills, "kills": len(rows), "attempts": attempts_total,
        "resumes": sum(r["resumes"] for r in runs), "fresh_restarts": sum(r["fresh_restarts"] for r in runs),
        "runs_killed": len(runs), "reference_seconds": round(ref.seconds, 2),
        "timing": {"setup_s": round(timing.setup_s, 2), "total_s": round(timing.total_s, 2),
                   "write_s": {k: round(v, 3) for k, v in timing.write_s.items()},
                   "eval_s": {str(k): round(v, 3) for k, v in timing.eval_s.items()}},
        "kill_log": rows, "checkpoint_read_failures": len(read_failures) + sum(r["unreadable"] for r in runs),
        "weights_identical": all(r["weights_identical"] for r in runs), "runs": runs,
        "failures": failures, "findings": [f"{r['folder']}: {f}" for r in runs for f in r["findings"]],
        "ok": not failures,
    }


def format_report(report: dict) -> str:
    out = [f"kill-resume (seed {report['seed']}): {report['kills']} kill(s) of {report['kills_requested']}, "
           f"{report['attempts']} attempts in {report['runs_killed']} killed run(s): {report['resumes']} resumed, "
           f"{report['fresh_restarts']} restarted fresh (no last.pt yet)",
           f"{'#':>2} {'run':>3}  {'kind':<10} {'at s':>6}  {'logged':>6}  {'last.pt':>7}  phase"]
    for row in report["kill_log"]:
        out.append(f"{row['kill']:>2} {row['run']:>3}  {row['kind']:<10} {row['at_s']:>6.2f}  "
                   f"{str(row['iteration_logged']):>6}  {str(row['last_pt_iteration']):>7}  {row['phase']}")
    out.append("(logged: the last training iteration in metrics.jsonl at the kill; last.pt: the iteration the next "
               "attempt resumes from)")
    out.append(f"checkpoint read failures: {report['checkpoint_read_failures']}")
    for run in report["runs"]:
        train = run["train_records"]
        out.append(f"{run['folder']}: final last.pt weights identical to the uninterrupted run: "
                   f"{'yes' if run['weights_identical'] else 'NO'}; training records {train['found']} for "
                   f"{train['expected']} iterations ({'each once, in order' if train['in_order'] else 'NOT each once'}"
                   f"), torn lines {run['torn_lines']}; best.pt identical {run['best_identical']}, eval.json "
                   f"identical {run['eval_json_identical']}")
    out += [f"finding: {f}" for f in report["findings"]]
    out += [f"FAILURE: {f}" for f in report["failures"]]
    out.append("result: " + ("ok" if report["ok"] else "FAILED"))
    return "\n".join(out)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8, help="how many SIGKILLs must land (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill kinds and placements (default 0)")
    parser.add_argument("--epochs", type=int, default=2, help="train.epochs of the tiny run (default 2)")
    parser.add_argument("--output-dir", help="new or empty folder for the runs and logs, kept (default: a temporary "
                        "folder, removed)")
    parser.add_argument("--json", help="also write the report to this JSON file")
    parser.add_argument("--strict", action="store_true",
                        help="findings (epoch/eval records, temporary files, best.pt, eval.json) fail too")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.kills < 0 or args.epochs < 1:
        raise SystemExit("--kills must be at least 0 and --epochs at least 1")
    if args.output_dir and os.path.isdir(args.output_dir) and os.listdir(args.output_dir):
        raise SystemExit(f"--output-dir {args.output_dir} is not empty: give a new or empty folder")
    root = Path(args.output_dir) if args.output_dir else Path(tempfile.mkdtemp(prefix="detkit-kill-resume-"))
    try:
        report = run_check(root.resolve(), args.kills, args.seed, args.epochs)
    finally:
        if not args.output_dir:
            shutil.rmtree(root, ignore_errors=True)
    if args.strict and report["findings"]:
        report["failures"] += [f"(--strict) {f}" for f in report["findings"]]
        report["ok"] = False
    print(format_report(report))
    if args.json:
        write_json_atomic(report, args.json)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
