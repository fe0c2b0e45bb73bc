"""The device a run uses, checked before any work starts, and the CUDA settings of a training process.

``resolve_device("cuda", key="train.device")`` on a machine without a usable GPU raises one
:class:`ConfigError` naming the option, instead of torch's "Found no NVIDIA driver" traceback from
deep inside the first ``.to()`` after the data report and the anchor fit have already run. Every
entry point calls it first: :func:`detkit.engine.trainer.train` and the Trainer, evaluation
(`detkit eval`, :func:`detkit.evaluation.evaluate.evaluate_checkpoint`), inference (`detkit infer`,
:func:`detkit.load_model`).
"""

from __future__ import annotations

from typing import Optional

import torch

from detkit.errors import ConfigError

__all__ = ["resolve_device", "cuda_unavailable_reason", "apply_cuda_settings"]


def cuda_unavailable_reason() -> Optional[str]:
    """None when a CUDA device can be used, else why not (for messages and test skips)."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) was built without CUDA"
    if not torch.cuda.is_available():
        return "no NVIDIA GPU or driver was found"
    return None


def resolve_device(name, *, key: str, local_rank: Optional[int] = None) -> torch.device:
    """``name`` ("cpu", "cuda", "cuda:N" or a torch.device) as a usable torch.device.

    Args:
        key: the config key or command-line option that gave ``name``, named in the error.
        local_rank: a torchrun process's LOCAL_RANK: plain "cuda" then means ``cuda:local_rank``.
    Returns:
        the CPU, or a CUDA device with its index.
    Raises:
        ConfigError: not a device name; CUDA asked for where there is none; an index past the GPUs.
    """
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{key} = {name!r} is not a device; use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"{key} = {name!r}: detkit runs on 'cpu' or 'cuda' / 'cuda:N', not {device.type!r}")
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise ConfigError(f"{key} = {name!r} asks for a GPU, but CUDA is not available here ({reason}); "
                          f"set {key} to 'cpu', or run where a GPU is")
    count = torch.cuda.device_count()
    index = device.index if device.index is not None else (local_rank if local_rank is not None
                                                             else torch.cuda.current_device())
    if not 0 <= index < count:
        raise ConfigError(f"{key} = {name!r}: GPU {index} does not exist; this machine has {count} "
                          f"(cuda:0 .. cuda:{count - 1})")
    return torch.device("cuda", index)


def apply_cuda_settings(device: torch.device, *, cudnn_benchmark: bool) -> None:
    """The process-wide settings of a CUDA run: the current device, cuDNN autotuning when asked for.

    ``cudnn_benchmark`` (``train.cudnn_benchmark``) lets cuDNN time its convolution algorithms for each
    new input shape and keep the fastest: a gain when the padded batch shapes repeat (a fixed
    ``data.min_size`` and aspect-ratio grouping), a loss when nearly every batch has a new shape
    (multi-scale training), since each new shape is timed again. TF32 matmuls stay torch's default.
    """
    if device.type != "cuda":
        return
    torch.cuda.set_device(device)
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
