"""detkit/engine/run_folder.py: a run folder that cannot hold the checkpoints fails before training."""

import os
import shutil
from collections import namedtuple

import pytest
import torch

from detkit.engine import run_folder
from detkit.engine.run_folder import check_run_folder, checkpoint_bytes
from detkit.engine.trainer import Trainer
from detkit.errors import ConfigError


def test_checkpoint_size_counts_weights_optimizer_and_average():
    model = torch.nn.Linear(100, 10)  # 1010 float32 values
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert checkpoint_bytes(model, sgd) == 4040 + 2 * 4040
    assert checkpoint_bytes(model, sgd, weight_copies=2) == 2 * 4040 + 2 * 4040


def test_a_file_where_the_folder_should_be_is_a_clear_error(tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match=r"output.dir '.*taken.*' cannot be written"):
        check_run_folder(str(tmp_path / "taken" / "run"), 1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_a_clear_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="cannot be written"):
            check_run_folder(str(tmp_path / "run"), 1)
    finally:
        tmp_path.chmod(0o700)


def test_full_disk_fails_before_training(tiny_cfg, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_folder.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))
    trainer = Trainer(tiny_cfg(), quiet=True, log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"1 MiB free, but a checkpoint of this model takes about"):
        trainer.run()
    assert not os.path.exists(tmp_path / "run" / "last.pt")
    monkeypatch.setattr(run_folder.shutil, "disk_usage", shutil.disk_usage)
    check_run_folder(str(tmp_path / "run"), 1)  # with room, the same folder passes


def test_temporary_files_of_killed_writes_are_removed(tmp_path):
    from detkit.atomic_io import remove_stale_temp_files

    for name in (".last.pt.abc123.tmp", ".eval.json.x.tmp", ".notes.txt.y.tmp", "last.pt"):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_stale_temp_files(str(tmp_path), ("last.pt", "eval.json"))
    assert sorted(p.rsplit("/", 1)[-1] for p in removed) == [".eval.json.x.tmp", ".last.pt.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.txt.y.tmp", "last.pt"]  # others untouched
