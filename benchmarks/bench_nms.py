"""detkit.ops.nms vs torchvision.ops.nms / batched_nms on the CPU, one process, same inputs.

Cases (boxes float32, scores uniform or jitter-dependent):
  random-N     N boxes with sides uniform in [10, 100] on a 1000 x 1000 canvas, IoU 0.5
               (N = 1k, 5k, 20k, 100k).
  clustered-N  RPN-like: 40 objects (sides 20..300 on 1333 x 800), N jittered copies (sigma 10 %
               of the side), score falling with the jitter, IoU 0.7 (N = 2k, 12k).
  batched-80   10k random boxes in 80 classes, batched_nms at IoU 0.5.

Both libraries run with the same thread count (torch.set_num_threads and numba.set_num_threads,
1 unless --threads). detkit's Numba kernels are compiled (or loaded from cache) before timing.
Repeats alternate torchvision and detkit so machine drift hits both alike; the median wall-clock
time is reported (the JSON also holds the median CPU time of the calling thread, which is the
steadier number on a shared machine). torchvision takes seconds per call at 100k boxes, so its
repeats stop once they have used --budget seconds (at least --min-repeats of them).
"identical" compares the full outputs.

    python -m benchmarks.bench_nms [--repeats 7] [--min-repeats 3] [--budget 20] [--threads N]
                                   [--cases random-1000,clustered-2000,...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable, Dict, List

import numba
import numpy as np
import torch
import torchvision

from detkit.ops.nms import batched_nms, nms
from detkit.testing import clustered_boxes, uniform_boxes


def build_cases() -> Dict[str, tuple]:
    """name -> (torchvision fn, detkit fn, args)."""
    cases = {}
    for n in (1000, 5000, 20000, 100000):
        boxes, scores = uniform_boxes(n, 0)
        cases[f"random-{n}"] = (torchvision.ops.nms, nms, (boxes, scores, 0.5))
    for n in (2000, 12000):
        boxes, scores = clustered_boxes(n, 1, objects=40)
        cases[f"clustered-{n}"] = (torchvision.ops.nms, nms, (boxes, scores, 0.7))
    boxes, scores = uniform_boxes(10000, 2)
    idxs = torch.from_numpy(np.random.default_rng(3).integers(0, 80, 10000))
    cases["batched-80"] = (torchvision.ops.batched_nms, batched_nms, (boxes, scores, idxs, 0.5))
    return cases


def _timed(fn: Callable, args: tuple):
    """(wall-clock seconds, this thread's CPU seconds, output) of one call."""
    start, start_cpu = time.perf_counter(), time.thread_time()
    out = fn(*args)
    return time.perf_counter() - start, time.thread_time() - start_cpu, out


def measure(tv_fn: Callable, dk_fn: Callable, args: tuple, repeats: int, min_repeats: int, budget: float) -> dict:
    dk_out = dk_fn(*args)   # untimed: kernels are compiled already, this only touches the input
    tv_out = None
    tv_times, dk_times, tv_cpu, dk_cpu = [], [], [], []
    for rep in range(repeats):
        if rep < min_repeats or sum(tv_times) < budget:
            wall, cpu, out = _timed(tv_fn, args)
            tv_times.append(wall)
            tv_cpu.append(cpu)
            tv_out = out if tv_out is None else tv_out
        wall, cpu, _ = _timed(dk_fn, args)
        dk_times.append(wall)
        dk_cpu.append(cpu)
    tv_ms, dk_ms = statistics.median(tv_times) * 1e3, statistics.median(dk_times) * 1e3
    return {"torchvision_ms": tv_ms, "detkit_ms": dk_ms, "speedup": tv_ms / dk_ms,
            "identical": bool(torch.equal(tv_out, dk_out)), "kept": int(dk_out.numel()),
            "torchvision_cpu_ms": statistics.median(tv_cpu) * 1e3, "detkit_cpu_ms": statistics.median(dk_cpu) * 1e3,
            "repeats_torchvision": len(tv_times), "repeats_detkit": len(dk_times)}


def warm_up() -> None:
    """Compile (or load from the Numba cache) every kernel the cases use."""
    boxes, scores = uniform_boxes(200, 9)
    nms(boxes, scores, 0.5)
    idxs = torch.from_numpy(np.random.default_rng(0).integers(0, 5, 2000))
    boxes, scores = uniform_boxes(2000, 9)
    batched_nms(boxes, scores, idxs, 0.5)


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per library and case")
    parser.add_argument("--min-repeats", type=int, default=3, help="torchvision calls even when over budget")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of torchvision calls per case")
    parser.add_argument("--threads", type=int, default=1, help="torch and Numba threads")
    parser.add_argument("--cases", default="", help="comma-separated subset of the case names")
    parser.add_argument("--json", default="", help="write the rows (and the setup) to this file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    t0 = time.perf_counter()
    warm_up()
    print(f"warm-up (Numba compile or cache load): {time.perf_counter() - t0:.1f} s; "
          f"threads: torch {torch.get_num_threads()}, numba {numba.get_num_threads()}")
    cases = build_cases()
    wanted = [c for c in args.cases.split(",") if c] or list(cases)
    unknown = sorted(set(wanted) - set(cases))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; valid: {', '.join(cases)}")

    header = f"{'case':<16} {'torchvision ms':>15} {'detkit ms':>10} {'speed-up':>9} {'identical':>10}"
    print(header)
    print("-" * len(header))
    rows = []
    for name in wanted:
        tv_fn, dk_fn, fn_args = cases[name]
        row = {"case": name, **measure(tv_fn, dk_fn, fn_args, args.repeats, args.min_repeats, args.budget)}
        rows.append(row)
        print(f"{name:<16} {row['torchvision_ms']:>15.2f} {row['detkit_ms']:>10.3f} {row['speedup']:>8.1f}x "
              f"{'yes' if row['identical'] else 'NO':>10}", flush=True)
    if args.json:
        setup = {"threads": args.threads, "torch": torch.__version__, "torchvision": torchvision.__version__,
                 "numba": numba.__version__, "numpy": np.__version__, "machine": platform.machine(),
                 "processor": platform.processor(), "python": platform.python_version()}
        with open(args.json, "w") as f:
            json.dump({"benchmark": "nms", "setup": setup, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
