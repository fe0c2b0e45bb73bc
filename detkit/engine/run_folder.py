"""The run folder (``output.dir``) checked before training starts: writable, with room for the
checkpoints, so that a read-only or full disk fails at once with one clear message instead of
after the first epoch (or, worse, in the middle of a checkpoint write)."""

from __future__ import annotations

import shutil
from typing import Callable, Sequence

import torch

from detkit.atomic_io import check_writable_folder, remove_stale_temp_files
from detkit.errors import ConfigError

__all__ = ["checkpoint_bytes", "check_run_folder", "prepare_run_folder"]


def checkpoint_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, weight_copies: int = 1) -> int:
    """About how many bytes one checkpoint takes: ``weight_copies`` copies of the model's state (2 with
    a moving average) plus the optimizer's state tensors (SGD momentum, Adam moments)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values() if torch.is_tensor(t))
    optim = sum(t.numel() * t.element_size() for state in optimizer.state_dict()["state"].values()
                for t in state.values() if torch.is_tensor(t))
    # Before the first step the optimizer has no state yet: momentum and Adam keep up to two copies.
    optim = max(optim, 2 * sum(p.numel() * p.element_size() for g in optimizer.param_groups for p in g["params"]))
    return weight_copies * weights + optim


def check_run_folder(path: str, needed_bytes: int) -> None:
    """Create ``path`` if needed and check that a file can be written there and that the disk has room
    for ``needed_bytes`` (a checkpoint) twice: an atomic save writes the new file beside the old one.

    Raises:
        ConfigError: naming output.dir, the folder and what is wrong.
    """
    try:
        check_writable_folder(path)
    except OSError as exc:
        raise ConfigError(f"output.dir '{path}' cannot be written ({exc.strerror or exc}); choose a writable "
                          f"folder with --output-dir or output.dir=...") from None
    free = shutil.disk_usage(path).free
    if free < 2 * needed_bytes:
        raise ConfigError(f"output.dir '{path}' has {free / 2**20:.0f} MiB free, but a checkpoint of this model "
                          f"takes about {needed_bytes / 2**20:.0f} MiB and saving one needs room for two; free "
                          f"some space or choose another folder with --output-dir")


def prepare_run_folder(path: str, run_files: Sequence[str], *, needed_bytes: int,
                       log: Callable[[str], None] = print) -> None:
    """Remove the temporary files of writes a killed run left unfinished (of ``run_files``), then
    :func:`check_run_folder`."""
    stale = remove_stale_temp_files(path, tuple(run_files))
    if stale:
        log(f"removed {len(stale)} temporary file(s) of writes a killed run left unfinished in {path}")
    check_run_folder(path, needed_bytes)
