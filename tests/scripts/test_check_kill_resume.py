"""Kill-safety: a run SIGKILLed again and again ends as the uninterrupted one (scripts/check_kill_resume.py)."""

import json

import pytest

from scripts import check_kill_resume


@pytest.mark.slow
def test_runs_killed_at_random_moments_end_as_the_uninterrupted_run(tmp_path):
    # Seed 2 draws checkpoint, evaluation, eval-line, random: the first kill lands in the first checkpoint
    # write, before any last.pt exists, so the run also restarts fresh once, before it resumes.
    report_path = tmp_path / "report.json"
    code = check_kill_resume.main(["--kills", "4", "--seed", "2", "--output-dir", str(tmp_path / "bench"),
                                   "--json", str(report_path), "--strict"])
    report = json.loads(report_path.read_text())
    assert report["kills"] == 4 and report["resumes"] >= 2
    assert {row["kind"] for row in report["kill_log"]} == {"random", "checkpoint", "evaluation", "eval-line"}
    assert report["fresh_restarts"] >= 1  # the first kill lands before last.pt exists: a fresh start follows
    assert report["checkpoint_read_failures"] == 0
    assert report["weights_identical"], report["failures"]
    # --strict: the epoch and eval records, best.pt and eval.json are the reference's too, no temp file is left.
    assert code == 0 and report["ok"], report["failures"]
