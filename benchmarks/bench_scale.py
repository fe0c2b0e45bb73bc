"""COCO scale, stage by stage: indexing, DataLoader worker memory, anchor fitting, linting, evaluation.

Usage:
    python -m benchmarks.bench_scale [--scale 1.0] [--data DIR] [--keep] [--json OUT]
                                     [--stages coco_index voc_index loader anchors lint eval]
                                     [--batches 2000] [--workers 4]

The data (benchmarks/scale_data.py) is generated from a seed into --data (default: a temporary folder,
removed at the end unless --keep): a COCO train2017-shaped file (118k images, about 860k boxes at
scale 1), a VOC07+12-trainval-shaped XML tree (16,551 files), a 5,000-image validation file, and hard
links to a small pool of flat JPEGs. Each measurement runs in its own Python process, which reports
its wall time and its peak RSS above the interpreter's (the RSS after the imports). Peers, in the
same run: pycocotools ``COCO()`` + ``COCOeval`` for loading and evaluation, and a
torchvision-reference-style data set that keeps one dict per image for the VOC parse and the loader.

Loader stage: 4 workers, ``--batches`` batches of 2 images (min_size 320), RSS and private memory
(USS: the pages a process does not share; what copy-on-write growth shows up in) of the main
process and of every worker after the first batch and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STAGES = ("coco_index", "voc_index", "loader", "anchors", "lint", "eval")


def _mem(pid: int = 0) -> dict:
    """RSS and USS (private) of a process in MB, from /proc."""
    pid = pid or os.getpid()
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024, 1)
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            private = sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean:", "Private_Dirty:")))
        out["uss_mb"] = round(private / 1024, 1)
    except OSError:
        pass
    return out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(fn):
    base = _mem()["rss_mb"]
    start = time.perf_counter()
    result = fn() or {}
    return {"seconds": round(time.perf_counter() - start, 2), "peak_rss_above_start_mb": round(_peak_mb() - base, 1),
            **result}


# --------------------------------------------------------------------------- stages (child processes)
def stage_coco_index(data: str, which: str) -> dict:
    ann_file, img_dir = os.path.join(data, "coco", "annotations.json"), os.path.join(data, "coco", "images")
    if which == "pycocotools":
        import contextlib
        import io

        from pycocotools.coco import COCO

        def run():
            with contextlib.redirect_stdout(io.StringIO()):
                api = COCO(ann_file)
            return {"images": len(api.imgs), "boxes": len(api.anns)}
        return _timed(run)
    from detkit.data.coco import COCODataset

    def run():
        ds = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False, index_cache=which != "detkit_nocache",
                         cache_dir=None)
        return {"images": len(ds), "boxes": ds.index.num_boxes, "ignore_regions": len(ds.index.ignore_boxes),
                "index_mb": round(ds.index.nbytes / 2 ** 20, 1), "fixes": {k: v["count"] for k, v in
                                                                          ds.report.to_dict().items()}}
    return _timed(run)


def stage_voc_index(data: str, which: str) -> dict:
    roots = [os.path.join(data, "voc", y) for y in ("VOC2007", "VOC2012")]
    if which == "dict_per_image":
        import xml.etree.ElementTree as ET

        def to_dict(node):  # torchvision.datasets.VOCDetection.parse_voc_xml's shape: nested dicts
            children = list(node)
            if not children:
                return {node.tag: (node.text or "").strip()}
            out = {}
            for child in children:
                for k, v in to_dict(child).items():
                    out.setdefault(k, []).append(v) if k == "object" else out.__setitem__(k, v)
            return {node.tag: out}

        def run():
            items = []
            for root in roots:
                with open(os.path.join(root, "ImageSets", "Main", "trainval.txt")) as f:
                    for image_id in f.read().split():
                        items.append(to_dict(ET.parse(os.path.join(root, "Annotations", image_id + ".xml")).getroot()))
            return {"images": len(items), "boxes": sum(len(i["annotation"].get("object", [])) for i in items)}
        return _timed(run)
    from detkit.data.voc import VOCDataset

    def run():
        ds = VOCDataset(roots=roots, splits=["trainval"], log_report=False)
        return {"images": len(ds), "boxes": ds.index.num_boxes, "ignore_regions": len(ds.index.ignore_boxes)}
    return _timed(run)


def stage_loader(data: str, which: str, batches: int, workers: int) -> dict:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader

    from detkit.config import Config
    from detkit.data.loader import build_loader

    ann_file, img_dir = os.path.join(data, "coco", "annotations.json"), os.path.join(data, "coco", "images")
    cfg = Config()
    cfg.data.format, cfg.data.min_size, cfg.data.max_size = "coco", [320], 533
    cfg.data.train.ann_file, cfg.data.train.img_dir = ann_file, img_dir
    cfg.data.index_cache_dir = None
    if which == "detkit":
        loader = build_loader(cfg, "train", num_workers=workers, batch_size=2)
    else:
        from benchmarks.peer_dataset import DictPerImageDataset

        dataset = DictPerImageDataset(ann_file, img_dir)
        sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
        loader = DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=workers, collate_fn=list)
    main_start = _mem()
    it = iter(loader)
    next(it)
    pids = [w.pid for w in it._workers]
    start = {pid: _mem(pid) for pid in pids}
    t0 = time.perf_counter()
    seen = 1
    for _ in range(batches - 1):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
            pids = [w.pid for w in it._workers]
        seen += 1
    end = {pid: _mem(pid) for pid in pids}
    growth = [round(end[p].get(k, 0) - start[p].get(k, 0), 1) for p in pids if p in start
              for k in ("rss_mb",)]
    growth_uss = [round(end[p].get("uss_mb", 0) - start[p].get("uss_mb", 0), 1) for p in pids if p in start]
    del np
    return {"batches": seen, "seconds": round(time.perf_counter() - t0, 1), "main_start": main_start,
            "main_end": _mem(), "workers_start": list(start.values()), "workers_end": list(end.values()),
            "worker_rss_growth_mb": growth, "worker_uss_growth_mb": growth_uss}


def _coco_cfg(data: str):
    from detkit.config import Config

    cfg = Config()
    cfg.data.format = "coco"
    cfg.data.train.ann_file = os.path.join(data, "coco", "annotations.json")
    cfg.data.train.img_dir = os.path.join(data, "coco", "images")
    cfg.data.val.ann_file = os.path.join(data, "val", "annotations.json")
    cfg.data.val.img_dir = os.path.join(data, "val", "images")
    cfg.data.index_cache_dir = None
    return cfg


def stage_anchors(data: str, which: str) -> dict:
    from detkit.anchors.boxes import collect_training_boxes
    from detkit.anchors.modes import run_anchor_modes
    from detkit.anchors.setup import AnchorSetup
    from detkit.data.formats import build_dataset

    cfg = _coco_cfg(data)
    cfg.model.anchors.learned_init = "manual"
    dataset = build_dataset(cfg, "train", log_report=False)

    def run():
        start = time.perf_counter()
        boxes = collect_training_boxes(dataset, AnchorSetup.from_config(cfg))
        collect = time.perf_counter() - start
        result = run_anchor_modes(AnchorSetup.from_config(cfg), boxes, (which,), log=lambda s: None)[which]
        return {"all_boxes": int(dataset.index.num_boxes), "fit_boxes": len(boxes),
                "collect_seconds": round(collect, 2), "adopted": bool(result.fit.adopted), "reason": result.fit.reason}
    return _timed(run)


def stage_lint(data: str, which: str) -> dict:
    from detkit.data.lint import lint_config

    cfg = _coco_cfg(data)

    def run():
        result = lint_config(cfg, ("train",), decode=False)
        return {"images": result["train"]["images"], "boxes": result["train"]["boxes"]}
    return _timed(run)


def stage_eval(data: str, which: str) -> dict:
    import numpy as np

    from benchmarks.scale_data import make_detections
    from detkit.data.coco import COCODataset
    from detkit.evaluation.evaluator import (
        COCO_METRIC_NAMES,
        detections_to_coco_results,
        evaluate_detections,
        write_json,
    )

    ann_file, img_dir = os.path.join(data, "val", "annotations.json"), os.path.join(data, "val", "images")
    ds = COCODataset(ann_file=ann_file, img_dir=img_dir, log_report=False, index_cache=True, cache_dir=None)
    annotations = [ds.get_annotation(i) for i in range(len(ds))]
    detections = make_detections(annotations, len(ds.classes), seed=1)
    out_json = os.path.join(data, f"detections_{which}.json")
    if which == "pycocotools_peer":
        import contextlib
        import io

        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        def run():
            with contextlib.redirect_stdout(io.StringIO()):
                gt = COCO(ann_file)
                results = detections_to_coco_results(detections, [a["image_id"] for a in annotations],
                                                     ds.category_ids)
                ev = COCOeval(gt, gt.loadRes(results), "bbox")
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
            with open(out_json, "w") as f:
                json.dump(results, f)
            return {"coco": dict(zip(COCO_METRIC_NAMES, [max(float(s), 0.0) for s in ev.stats])),
                    "detections": len(results)}
        return _timed(run)

    def run():
        metrics, results = evaluate_detections(annotations, detections, ds.classes, ds.category_ids, backend=which)
        write_json(results, out_json)
        return {"coco": metrics["coco"], "voc_mAP50": metrics["voc"]["mAP50_area"], "detections": len(results),
                "per_class_AP_sum": float(np.sum([v["AP"] for v in metrics["per_class"].values()]))}
    return _timed(run)


# --------------------------------------------------------------------------- driver
RUNS = {"coco_index": ("detkit_nocache", "detkit_cache_cold", "detkit_cache_warm", "pycocotools"),
        "voc_index": ("detkit", "dict_per_image"), "loader": ("detkit", "dict_per_image"),
        "anchors": ("kmeans", "learned"), "lint": ("detkit",), "eval": ("faster", "pycocotools", "pycocotools_peer")}


def _child(args) -> int:
    fn = {"coco_index": stage_coco_index, "voc_index": stage_voc_index, "anchors": stage_anchors,
          "lint": stage_lint, "eval": stage_eval}
    if args.stage == "loader":
        out = stage_loader(args.data, args.which, args.batches, args.workers)
    else:
        out = fn[args.stage](args.data, args.which)
    print("RESULT " + json.dumps(out))
    return 0


def _run_child(stage: str, which: str, args) -> dict:
    # a fresh interpreter per stage, run as a module from the caller's folder (--data may be relative to it)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "benchmarks.bench_scale", "--stage", stage, "--which", which, "--data", args.data,
           "--batches", str(args.batches), "--workers", str(args.workers)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = [s for s in proc.stdout.splitlines() if s.startswith("RESULT ")]
    if proc.returncode or not line:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(line[-1][len("RESULT "):])


def generate(data: str, scale: float) -> dict:
    from benchmarks.scale_data import make_coco, make_voc

    start = time.perf_counter()
    make_coco(os.path.join(data, "coco"), scale=scale, seed=0)
    make_coco(os.path.join(data, "val"), num_images=max(2, int(round(5000 * min(1.0, scale)))), seed=1,
              flaws=False)
    make_voc(os.path.join(data, "voc"), scale=scale, seed=0)
    return {"seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full sizes (e.g. 0.05)")
    parser.add_argument("--data", default=None, help="folder for the generated data (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated data")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--json", default=None, help="write all figures to this JSON file")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--which", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        return _child(args)
    temporary = args.data is None
    args.data = args.data or tempfile.mkdtemp(prefix="detkit-scale-")
    try:
        report = {"scale": args.scale, "cpus": os.cpu_count(), "generate": generate(args.data, args.scale)}
        print(f"data in {args.data} (generated in {report['generate']['seconds']} s)", flush=True)
        for stage in args.stages:
            report[stage] = {}
            for which in RUNS[stage]:
                report[stage][which] = out = _run_child(stage, which, args)
                print(f"{stage:<10} {which:<18} {json.dumps(out)}", flush=True)
        summarize(report)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(args.data, ignore_errors=True)
    return 0


def time_ratio(seconds: float, peer_seconds: float, digits: int):
    """seconds / peer_seconds, or None where the peer's time rounded to 0 (a tiny --scale on a fast
    machine): no ratio can be read from it, and the run must still finish and write its JSON."""
    return round(seconds / peer_seconds, digits) if peer_seconds > 0 else None


def summarize(report: dict) -> None:
    """Ratios against the peers measured in this run (printed, and stored under "summary")."""
    s = {}
    ci, ev = report.get("coco_index", {}), report.get("eval", {})
    if "seconds" in ci.get("detkit_nocache", {}) and "seconds" in ci.get("pycocotools", {}):
        s["coco_index_vs_pycocotools"] = time_ratio(ci["detkit_nocache"]["seconds"], ci["pycocotools"]["seconds"], 2)
    if all("seconds" in ev.get(k, {}) for k in ("faster", "pycocotools_peer")):
        s["eval_faster_vs_pycocotools_peer"] = time_ratio(ev["faster"]["seconds"], ev["pycocotools_peer"]["seconds"], 3)
        s["eval_faster_vs_detkit_pycocotools"] = time_ratio(ev["faster"]["seconds"], ev["pycocotools"]["seconds"], 3)
        s["eval_max_abs_diff"] = max(abs(ev["faster"]["coco"][k] - ev[o]["coco"][k]) for k in ev["faster"]["coco"]
                                     for o in ("pycocotools", "pycocotools_peer"))
    report["summary"] = s
    print("summary " + json.dumps(s), flush=True)


if __name__ == "__main__":
    sys.exit(main())
