"""benchmarks/bench_scale.py end to end at a tiny --scale: every stage runs and reports, and the
evaluation backends agree (the full-scale figures are in benchmarks/results/scale.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_scale_runs_every_stage(tmp_path):
    out = tmp_path / "scale.json"
    subprocess.run([sys.executable, "-m", "benchmarks.bench_scale", "--scale", "0.002", "--batches", "5",
                    "--workers", "1", "--data", str(tmp_path / "data"), "--json", str(out)], check=True, cwd=ROOT,
                   timeout=600)
    report = json.loads(out.read_text())
    for stage, runs in report.items():
        if isinstance(runs, dict) and stage not in ("generate", "summary"):
            for name, result in runs.items():
                assert "error" not in result, (stage, name, result.get("error"))
    assert report["coco_index"]["detkit_cache_warm"]["boxes"] == report["coco_index"]["detkit_nocache"]["boxes"]
    assert report["summary"]["eval_max_abs_diff"] <= 1e-6
    assert report["loader"]["detkit"]["batches"] == 5
    assert (tmp_path / "data" / "coco" / "annotations.json").is_file()  # generated where it was told, not in the repo


def test_summary_survives_a_peer_time_that_rounds_to_zero():
    """A tiny --scale on a fast machine times pycocotools' index at 0.0 s: the ratio is None, not a crash."""
    from benchmarks.bench_scale import summarize

    report = {"coco_index": {"detkit_nocache": {"seconds": 0.01}, "pycocotools": {"seconds": 0.0}}}
    summarize(report)
    assert report["summary"]["coco_index_vs_pycocotools"] is None
    report = {"coco_index": {"detkit_nocache": {"seconds": 0.01}, "pycocotools": {"seconds": 0.02}}}
    summarize(report)
    assert report["summary"]["coco_index_vs_pycocotools"] == 0.5
