"""Kill-safety inside the trainer: a checkpoint write failing midway leaves the previous last.pt to resume from
(the run SIGKILLed at random moments is scripts/check_kill_resume.py, tested in tests/scripts/)."""

import pytest
import torch

from detkit.engine.trainer import Trainer
from detkit.weights import checkpoint as checkpoint_module
from detkit.weights.checkpoint import load_checkpoint


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
