"""detkit/engine/hooks/progress.py"""

import sys

from detkit.engine.hooks import ProgressHook
from tests.engine.hooks.fake_trainer import epoch_end, fake_trainer, step


def test_bar_counts_steps_and_the_epoch_line_is_logged_unless_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    trainer = fake_trainer(tmp_path, "train.epochs=3", train_loader=range(5), iteration=5)
    hook = ProgressHook(quiet=False)
    hook.before_epoch(trainer, 0)
    for i in range(1, 4):
        hook.after_step(trainer, step(i))
    assert hook.bar.n == 3 and hook.bar.total == 5 and not hook.bar.disable
    hook.after_epoch(trainer, epoch_end(0))
    assert trainer.messages == ["epoch 1/3: iteration 5, 4.00 img/s"]
    hook.before_epoch(trainer, 1)
    hook.after_epoch(trainer, epoch_end(1, stopped=True))
    assert len(trainer.messages) == 1


def test_quiet_or_no_terminal_means_no_bar(tmp_path, monkeypatch):
    trainer = fake_trainer(tmp_path, train_loader=range(5))
    for quiet, tty in ((True, True), (False, False)):
        monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
        hook = ProgressHook(quiet=quiet)
        hook.before_epoch(trainer, 0)
        assert hook.bar.disable, (quiet, tty)
        hook.after_epoch(trainer, epoch_end(0))
