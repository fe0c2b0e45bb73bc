"""benchmarks/bench_gpu.py (its CPU smoke mode and its clean exit without CUDA) and a dry run of
benchmarks/gpu_check.sh, which on a machine without CUDA must skip the CUDA parts and still write
its results folder."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks import bench_gpu
from detkit.runtime.device import cuda_unavailable_reason

REPO = Path(__file__).resolve().parents[2]

no_gpu = pytest.mark.skipif(cuda_unavailable_reason() is None, reason="checks the behaviour where CUDA is missing")


@pytest.mark.slow  # ~25-45 s on a 2-core CPU: keeps the default suite near 10 min on AVX2-only CPUs; CI runs it
def test_smoke_mode_runs_every_measurement(tmp_path, capsys):
    assert bench_gpu.main(["--device", "cpu", "--smoke", "--json", str(tmp_path / "b.json")]) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["status"] == "measured" and result["smoke"] and result["device"] == "cpu"
    for key in ("train", "infer_batch1", "infer_batch2"):
        row = result[key]
        assert row["detkit_img_s"] > 0 and row["tv_img_s"] > 0
        assert row["ratio"] == pytest.approx(row["detkit_img_s"] / row["tv_img_s"])  # one block: its ratio
    assert all(v is None for v in result["targets"].values())  # a smoke run claims no target
    assert "SMOKE RUN" in capsys.readouterr().out


def test_cpu_without_smoke_is_refused():
    assert bench_gpu.main(["--device", "cpu"]) == 2


@no_gpu
def test_without_cuda_it_says_so_and_exits_cleanly(tmp_path, capsys):
    assert bench_gpu.main(["--json", str(tmp_path / "b.json")]) == 0
    assert "CUDA is unavailable" in capsys.readouterr().out
    assert json.loads((tmp_path / "b.json").read_text())["status"] == "skipped"


@no_gpu
@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_folder_and_skips_the_cuda_parts(tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(results), str(tmp_path / "none")],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {p.name for p in results.iterdir()}
    assert {"env.txt", "cuda_tests.txt", "cuda_tests.xml", "bench_gpu.txt", "bench_gpu.json", "summary.txt"} <= names
    tests = (results / "cuda_tests.txt").read_text()
    assert "needs CUDA" in tests and " passed" not in tests and "failed" not in tests
    assert json.loads((results / "bench_gpu.json").read_text())["status"] == "skipped"
    assert "nothing installed" in (results / "env.txt").read_text()
    assert "skipped" in (results / "summary.txt").read_text()
