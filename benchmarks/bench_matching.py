"""detkit.ops.matching.match_max_iou vs torchvision's box_iou + Matcher on the CPU, one process.

Cases A x M: anchors are torchvision-style FPN anchors (strides 4..64, sizes 32..512, ratios
0.5 / 1 / 2) on the smallest 5:3 image that holds at least A of them, a seeded random subset
of exactly A; ground truth: M boxes with log-uniform sides from 16 px to 60 % of the image.

  torchvision: Matcher(0.7, 0.3, allow_low_quality_matches=True)(box_iou(gt, anchors))
  detkit:      match_max_iou(anchors, gt, 0.7, 0.3, True)

"identical" compares labels (positive / negative / between) and, for positives, the matched
ground truth. Both libraries run with the same thread count (torch.set_num_threads and
numba.set_num_threads, 1 unless --threads); the Numba kernels are compiled before timing;
repeats alternate the two libraries and the median wall-clock time is reported (the JSON also
holds the median CPU time of the calling thread, steadier on a shared machine). detkit's kernels
are single-threaded, so --threads only changes torchvision.

Peak extra memory: each (case, library) call runs once more in a fresh subprocess, which reads
the resident set size before the call and its high-water mark after it (the mark is reset
through /proc/self/clear_refs first), so the column is the extra RAM the call itself needed.

    python -m benchmarks.bench_matching [--repeats 7] [--threads N] [--no-memory] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, List

import numba
import numpy as np
import torch
import torchvision
from torchvision.models.detection._utils import Matcher

from detkit.ops.matching import match_max_iou

CASES = [(20_000, 20), (200_000, 50), (200_000, 200)]


def fpn_anchors(count: int, seed: int):
    """FPN anchors on the smallest 5:3 image holding >= count, a sorted random subset of count."""
    height = 64.0
    while True:
        width = height * 5 / 3
        parts = []
        for stride, size in zip([4, 8, 16, 32, 64], [32, 64, 128, 256, 512]):
            ys, xs = np.meshgrid(np.arange(0, height, stride) + stride / 2, np.arange(0, width, stride) + stride / 2,
                                 indexing="ij")
            centres = np.stack([xs.ravel(), ys.ravel()], 1)
            for ratio in (0.5, 1.0, 2.0):
                w, h = size / math.sqrt(ratio), size * math.sqrt(ratio)
                parts.append(np.concatenate([centres - [w / 2, h / 2], centres + [w / 2, h / 2]], 1))
        anchors = np.concatenate(parts)
        if len(anchors) >= count:
            break
        height *= 1.1
    pick = np.sort(np.random.default_rng(seed).choice(len(anchors), count, replace=False))
    return torch.from_numpy(anchors[pick].astype(np.float32)), (height, width)


def ground_truth(count: int, image: tuple, seed: int):
    height, width = image
    g = np.random.default_rng(seed + 1)
    wh = np.exp(g.uniform(math.log(16), math.log(0.6 * min(height, width)), (count, 2)))
    xy = g.uniform(0, 1, (count, 2)) * (np.array([width, height]) - wh)
    return torch.from_numpy(np.concatenate([xy, xy + wh], 1).astype(np.float32))


def make_case(num_anchors: int, num_gt: int):
    anchors, image = fpn_anchors(num_anchors, 0)
    return anchors, ground_truth(num_gt, image, 0)


def run_torchvision(anchors, gt):
    return Matcher(0.7, 0.3, allow_low_quality_matches=True)(torchvision.ops.box_iou(gt, anchors))


def run_detkit(anchors, gt):
    return match_max_iou(anchors, gt, 0.7, 0.3, True)


def identical(tv_matches, dk_result) -> bool:
    matched, labels = dk_result
    expected = torch.where(tv_matches >= 0, 1, torch.where(tv_matches == -1, 0, -1)).to(torch.int8)
    positive = tv_matches >= 0
    return bool(torch.equal(labels, expected) and torch.equal(matched[positive], tv_matches[positive]))


def _timed(fn: Callable, args: tuple):
    """(wall-clock seconds, this thread's CPU seconds, output) of one call."""
    start, start_cpu = time.perf_counter(), time.thread_time()
    out = fn(*args)
    return time.perf_counter() - start, time.thread_time() - start_cpu, out


def _read_status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory_child(num_anchors: int, num_gt: int, library: str, threads: int) -> None:
    """In a fresh process: print the peak extra resident memory (bytes) of one call."""
    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    anchors, gt = make_case(num_anchors, num_gt)
    fn = run_torchvision if library == "torchvision" else run_detkit
    fn(*make_case(2000, 5))   # compile / load kernels, touch libraries
    before = _read_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")   # reset VmHWM to the current RSS
    out = fn(anchors, gt)
    peak = _read_status("VmHWM")
    del out
    print(peak - before)


def peak_memory(num_anchors: int, num_gt: int, library: str, threads: int) -> float:
    cmd = [sys.executable, __file__, "--_memory-child", f"{num_anchors},{num_gt},{library}", "--threads", str(threads)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
        return int(out.strip().splitlines()[-1]) / 2 ** 20
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return float("nan")


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per library and case")
    parser.add_argument("--threads", type=int, default=1, help="torch and Numba threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--json", default="", help="write the rows (and the setup) to this file")
    parser.add_argument("--_memory-child", dest="memory_child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        a, m, library = args.memory_child.split(",")
        measure_memory_child(int(a), int(m), library, args.threads)
        return []

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    t0 = time.perf_counter()
    run_detkit(*make_case(2000, 5))
    print(f"warm-up (Numba compile or cache load): {time.perf_counter() - t0:.1f} s; "
          f"threads: torch {torch.get_num_threads()}, numba {numba.get_num_threads()}")
    header = (f"{'case A x M':<14} {'torchvision ms':>15} {'detkit ms':>10} {'speed-up':>9} {'identical':>10} "
              f"{'tv peak MiB':>12} {'detkit peak MiB':>16}")
    print(header)
    print("-" * len(header))
    rows = []
    for num_anchors, num_gt in CASES:
        anchors, gt = make_case(num_anchors, num_gt)
        run_detkit(anchors, gt)   # untimed first touch
        tv_times, dk_times, tv_cpu, dk_cpu = [], [], [], []
        for _ in range(args.repeats):
            wall, cpu, tv_out = _timed(run_torchvision, (anchors, gt))
            tv_times.append(wall)
            tv_cpu.append(cpu)
            wall, cpu, dk_out = _timed(run_detkit, (anchors, gt))
            dk_times.append(wall)
            dk_cpu.append(cpu)
        tv_ms, dk_ms = statistics.median(tv_times) * 1e3, statistics.median(dk_times) * 1e3
        row = {"case": f"{num_anchors}x{num_gt}", "anchors": num_anchors, "gt": num_gt, "torchvision_ms": tv_ms,
               "detkit_ms": dk_ms, "speedup": tv_ms / dk_ms, "identical": identical(tv_out, dk_out),
               "torchvision_cpu_ms": statistics.median(tv_cpu) * 1e3, "detkit_cpu_ms": statistics.median(dk_cpu) * 1e3,
               "positives": int((dk_out[1] == 1).sum()), "repeats": args.repeats,
               "iou_matrix_mib": num_anchors * num_gt * 4 / 2 ** 20}
        if not args.no_memory:
            row["torchvision_peak_mib"] = peak_memory(num_anchors, num_gt, "torchvision", args.threads)
            row["detkit_peak_mib"] = peak_memory(num_anchors, num_gt, "detkit", args.threads)
        rows.append(row)
        print(f"{row['case']:<14} {tv_ms:>15.2f} {dk_ms:>10.3f} {row['speedup']:>8.1f}x "
              f"{'yes' if row['identical'] else 'NO':>10} {row.get('torchvision_peak_mib', float('nan')):>12.1f} "
              f"{row.get('detkit_peak_mib', float('nan')):>16.1f}", flush=True)
    if args.json:
        setup = {"threads": args.threads, "torch": torch.__version__, "torchvision": torchvision.__version__,
                 "numba": numba.__version__, "numpy": np.__version__, "machine": platform.machine(),
                 "processor": platform.processor(), "python": platform.python_version()}
        with open(args.json, "w") as f:
            json.dump({"benchmark": "matching", "setup": setup, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
