"""Checkpoints: atomic saves that a crash cannot truncate, and loads that explain what is wrong.

A checkpoint is a dict of plain values and tensors (loadable with ``weights_only=True``):

    model, optimizer, scheduler   state dicts
    epoch, iteration              the next epoch to run and the iterations done so far
    rng                           torch CPU (and CUDA) generator states and the model's own generators
    config                        the resolved config as nested dicts
    classes, category_ids         class names (label i -> classes[i-1]) and data set category ids
    anchor_shapes                 L x A x (w, h): the anchors the model was trained with
    best                          {"metric": name, "value": float or None}
    detkit_version
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

from detkit.atomic_io import atomic_open
from detkit.errors import CheckpointError
from detkit.safe_load import load_torch_file
from detkit.version import __version__

__all__ = ["save_checkpoint", "load_checkpoint", "read_resume_checkpoint", "load_weights", "rng_states",
           "restore_rng_states", "REQUIRED_KEYS", "assert_finite_state"]

REQUIRED_KEYS = ("model", "config", "classes", "anchor_shapes")


def assert_finite_state(state_dict: dict, what: str = "model") -> None:
    """Raise CheckpointError when a floating tensor of ``state_dict`` holds NaN or inf."""
    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"refusing to save a checkpoint: {what} tensor '{name}' is not finite")


def save_checkpoint(state: dict, path: str) -> None:
    """Write ``state`` to ``path`` atomically.

    The bytes go to a temporary file in the same folder, which is flushed and fsync'ed, then renamed
    over ``path``: a crash or an exception at any point leaves the previous file untouched. A model
    with a NaN or infinite parameter is never written (CheckpointError).
    """
    for key in ("model", "train_model"):  # train_model: the trained weights beside an EMA "model"
        if key in state:
            assert_finite_state(state[key], key)
    state = dict(state)
    state.setdefault("detkit_version", __version__)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str, map_location: Any = "cpu", required: Optional[tuple] = REQUIRED_KEYS) -> dict:
    """Read a detkit checkpoint.

    Raises:
        CheckpointError: the file is missing, empty, truncated or corrupt, or lacks one of ``required``.
    """
    path = os.fspath(path)
    state = load_torch_file(path, "checkpoint", map_location)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint '{path}' holds a {type(state).__name__}, not a detkit checkpoint dict")
    missing = [key for key in (required or ()) if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint '{path}' is not a detkit checkpoint: missing {', '.join(missing)} "
                              f"(keys present: {', '.join(sorted(map(str, state))) or 'none'})")
    return state


def read_resume_checkpoint(path: str) -> dict:
    """The checkpoint ``--resume`` continues from (a run folder's last.pt), or a CheckpointError
    saying how to point at the run to continue."""
    if not os.path.exists(path):
        raise CheckpointError(f"--resume: no checkpoint to resume from at '{path}' "
                              f"(set output.dir / --output-dir to the folder of the run to continue)")
    return load_checkpoint(path)


def rng_states(model) -> dict:
    """The random states a resume restores: torch's CPU generator, CUDA's (when present), and the
    model's own sampling generators (``Detector.rng_state_dict``)."""
    rng = {"torch": torch.get_rng_state(), "model": model.rng_state_dict()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng_states(rng: dict, model) -> None:
    """Put back what :func:`rng_states` saved (a missing entry is left as it is)."""
    if "torch" in rng:
        torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if "model" in rng:
        model.load_rng_state_dict(rng["model"])


def _examples(keys: list) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def load_weights(model, state_dict: dict, path: str, what: str = "the configured model") -> None:
    """``model.load_state_dict(state_dict)`` (strict); a checkpoint of another model is one CheckpointError
    naming the file ``path`` and counting the missing, unexpected and reshaped keys (a few named)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    reshaped = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
                if k in state_dict and torch.is_tensor(state_dict[k]) and state_dict[k].shape != own[k].shape]
    problems = [f"{len(keys)} {kind} ({_examples(keys)})" for kind, keys in
                (("missing keys", missing), ("unexpected keys", unexpected),
                 ("keys of another shape, checkpoint vs model", reshaped)) if keys]
    if problems:
        raise CheckpointError(f"checkpoint '{path}' does not match {what} (another architecture, class count "
                              f"or anchor count?): {'; '.join(problems)}")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint '{path}' does not match {what}: {str(exc).splitlines()[0]}") from None
