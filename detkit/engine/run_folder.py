"""The run folder (``output.dir``) checked before training starts: writable, with room for the
checkpoints, so that a read-only or full disk fails at once with one clear message instead of
after the first epoch (or, worse, in the middle of a checkpoint write); and measured when it ends
(:func:`run_folder_summary`: the size line of the run's closing summary)."""

from __future__ import annotations

import os
import shutil
from typing import Callable, Sequence

import torch

from detkit.atomic_io import check_writable_folder, remove_stale_temp_files
from detkit.errors import ConfigError

__all__ = ["checkpoint_bytes", "check_run_folder", "prepare_run_folder", "folder_bytes", "format_size",
           "run_folder_summary"]


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


def folder_bytes(path: str) -> int:
    """The size of every file under ``path`` (subfolders included; links not followed), 0 if it is missing."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            file = os.path.join(root, name)
            if not os.path.islink(file):
                total += os.path.getsize(file)
    return total


def format_size(size: int) -> str:
    """``size`` bytes for a person: "1.07 GiB", "312 MiB", "4.5 MiB", "96 KiB"."""
    if size >= 2**30:
        return f"{size / 2**30:.2f} GiB"
    if size >= 10 * 2**20:
        return f"{size / 2**20:.0f} MiB"
    if size >= 2**20:
        return f"{size / 2**20:.1f} MiB"
    return f"{size / 2**10:.0f} KiB"


def run_folder_summary(path: str, parts: Sequence[str] = ("best.pt", "last.pt", "evaluated")) -> str:
    """One line for the end of a run: the size of the run folder ``path`` and of those of ``parts``
    (files or subfolders) it holds, e.g. "run folder runs/x: 312 MiB (best.pt 78 MiB, last.pt 234 MiB)"."""
    sizes = []
    for name in parts:
        full = os.path.join(path, name)
        if os.path.isdir(full):
            sizes.append(f"{name}/ {format_size(folder_bytes(full))}")
        elif os.path.isfile(full):
            sizes.append(f"{name} {format_size(os.path.getsize(full))}")
    detail = f" ({', '.join(sizes)})" if sizes else ""
    return f"run folder {path}: {format_size(folder_bytes(path))}{detail}"
