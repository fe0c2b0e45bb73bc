"""Reading a PyTorch file safely (``weights_only=True``: tensors and plain values only, no code runs)
with one short error for every way it can fail.

Every checkpoint and weights file detkit reads goes through :func:`load_torch_file`: ``--resume``,
``--weights`` / ``model.backbone.weights``, ``detkit eval``, ``detkit infer`` and ``load_model``.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

import torch

from detkit.errors import CheckpointError

__all__ = ["load_torch_file"]

# The longest part of a reader's own message that goes into ours.
_MAX_DETAIL = 160


def _detail(exc: Exception) -> str:
    """The first line of ``exc``'s message, at most _MAX_DETAIL characters."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    return first if len(first) <= _MAX_DETAIL else first[:_MAX_DETAIL - 3] + "..."


def load_torch_file(path: str, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, or a CheckpointError that starts with ``what`` (e.g.
    "checkpoint" or "model.backbone.weights"), names the file, and says in a line what is wrong."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} '{path}' does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{what} '{path}' is empty (0 bytes)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises loading with weights_only=False, which would run the file's code:
        # keep only the unpickler's own reason.
        reason = re.search(r"WeightsUnpickler error: ([^\n]+)", str(exc))
        global_name = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if global_name:
            raise CheckpointError(f"{what} '{path}' holds Python objects other than tensors and plain values "
                                  f"({global_name.group(1)}), so it was not written by detkit or as a state_dict(); "
                                  f"detkit reads weights only, for safety") from None
        detail = reason.group(1) if reason else _detail(exc)
        raise CheckpointError(f"{what} '{path}' cannot be read (corrupt, or not a PyTorch file?): "
                              f"{detail[:_MAX_DETAIL]}") from None
    except Exception as exc:  # torch raises many types for truncated / corrupt / foreign files
        raise CheckpointError(f"{what} '{path}' cannot be read (truncated or corrupt?): "
                              f"{type(exc).__name__}: {_detail(exc)}") from None
