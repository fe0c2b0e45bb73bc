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
