"""Kill-safety: a run SIGKILLed again and again ends as the uninterrupted one (benchmarks/bench_kill_resume.py),
and a checkpoint write failing inside the trainer leaves the previous last.pt to resume from."""

import json

import pytest
import torch

from detkit.engine.trainer import Trainer
from detkit.weights import checkpoint as checkpoint_module
from detkit.weights.checkpoint import load_checkpoint
from tests.data.tools_runner import run_tool


@pytest.mark.slow
def test_runs_killed_at_random_moments_end_as_the_uninterrupted_run(tmp_path):
    # Seed 2 draws checkpoint, evaluation, eval-line, random: the first kill lands in the first checkpoint
    # write, before any last.pt exists, so the run also restarts fresh once, before it resumes.
    report_path = tmp_path / "report.json"
    code = run_tool("bench_kill_resume.py", "--kills", "4", "--seed", "2", "--output-dir", str(tmp_path / "bench"),
                    "--json", str(report_path), "--strict", folder="benchmarks")
    report = json.loads(report_path.read_text())
    assert report["kills"] == 4 and report["resumes"] >= 2
    assert {row["kind"] for row in report["kill_log"]} == {"random", "checkpoint", "evaluation", "eval-line"}
    assert report["fresh_restarts"] >= 1  # the first kill lands before last.pt exists: a fresh start follows
    assert report["checkpoint_read_failures"] == 0
    assert report["weights_identical"], report["failures"]
    # --strict: the epoch and eval records, best.pt and eval.json are the reference's too, no temp file is left.
    assert code == 0 and report["ok"], report["failures"]


def test_a_checkpoint_write_failing_midway_keeps_the_last_pt_to_resume_from(tiny_cfg, tmp_path, monkeypatch):
    real_save = torch.save
    saves = []

    def disk_full_on_the_second_save(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) == 2:  # last.pt of epoch 2; epoch 1's is on disk
            f.write(b"PK\x03\x04 the first bytes of a zip archive")
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full_on_the_second_save)
    with pytest.raises(OSError, match="No space left"):
        Trainer(tiny_cfg(**{"train.eval_every": 0}), quiet=True, log=lambda *_: None).run()
    monkeypatch.undo()

    run = tmp_path / "run"
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # the partial file went with the error
    ckpt = load_checkpoint(run / "last.pt")
    assert (ckpt["epoch"], ckpt["iteration"]) == (1, 4)
    messages = []
    Trainer(tiny_cfg(**{"train.eval_every": 0}), resume=True, quiet=True, log=messages.append).run()
    assert any("resumed from" in m and "iteration 4" in m for m in messages), messages
    assert load_checkpoint(run / "last.pt")["iteration"] == 8
