"""torch.distributed under torchrun: process context, DDP wrapping, rank-0-only side effects.

A process started by ``torchrun`` finds RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in
its environment; :func:`init_from_env` joins the process group from them (``env://``) with gloo on
the CPU and nccl on CUDA, also for ``--nproc_per_node 1`` (one process in a group: DDP, SyncBatchNorm
and nccl are then exercised as in a larger run). Without those variables everything here is a
single-process no-op, so the same code path trains with one process or many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Union

import torch
import torch.distributed as torch_dist

from detkit.config import Config
from detkit.errors import ConfigError

__all__ = ["DistContext", "launch_rank", "init_from_env", "get_context", "broadcast_object", "check_norm_for_device",
           "prepare_model", "sync_bn_parts", "barrier", "all_gather_objects", "mean_over_processes", "cleanup"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    in_group: bool = False  # a torch.distributed process group is initialised (torchrun, any size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.in_group

    def local_batch(self, global_batch: int) -> int:
        """Images per process for a global batch; the world size must divide it."""
        if global_batch % self.world_size:
            raise ConfigError(f"key 'train.batch_size' = {global_batch} (the global batch) is not divisible by the "
                              f"world size {self.world_size}; use a multiple of {self.world_size}")
        return global_batch // self.world_size


def get_context() -> DistContext:
    """The current process's place in the process group (rank 0 of 1 when not distributed)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return DistContext(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)),
                           in_group=True)
    return DistContext()


def launch_rank() -> int:
    """This process's rank as its launcher (torchrun) set it in the environment; 0 when not launched so.
    Unlike :func:`get_context` it holds before the process group is joined and after it is left."""
    return int(os.environ.get("RANK", "0"))


def init_from_env(device: str = "cpu") -> DistContext:
    """Join the process group that torchrun describes in the environment; a no-op without torchrun."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    launched = "RANK" in os.environ and "MASTER_ADDR" in os.environ  # torchrun sets both, for any size
    if (world_size <= 1 and not launched) or (torch_dist.is_available() and torch_dist.is_initialized()):
        return get_context()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    torch_dist.init_process_group(backend=backend, init_method="env://")
    return get_context()


def cleanup() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def barrier() -> None:
    if get_context().distributed:
        torch_dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (returned unchanged when not distributed)."""
    if not get_context().distributed:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``values`` over all processes (``values`` itself when not distributed)."""
    if not get_context().distributed:
        return values
    values = values.clone()
    torch_dist.all_reduce(values, op=torch_dist.ReduceOp.SUM)
    return values / get_context().world_size


def all_gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order."""
    ctx = get_context()
    if not ctx.distributed:
        return [obj]
    gathered = [None] * ctx.world_size
    torch_dist.all_gather_object(gathered, obj)
    return gathered


def check_norm_for_device(norm: str, device: torch.device, fpn_norm: Union[bool, str] = False) -> None:
    """Refuse ``model.backbone.norm = sync_bn`` (or ``fpn_norm = sync_bn``) for a distributed run on the
    CPU, with what to use instead."""
    if not get_context().distributed or device.type == "cuda":
        return
    if norm == "sync_bn":
        raise ConfigError("key 'model.backbone.norm' = 'sync_bn' synchronises BatchNorm over GPUs (torch's "
                          "SyncBatchNorm has no CPU version); on the CPU use 'bn' (per process) or 'frozen_bn'")
    if fpn_norm == "sync_bn":
        raise ConfigError("key 'model.backbone.fpn_norm' = 'sync_bn' synchronises BatchNorm over GPUs (torch's "
                          "SyncBatchNorm has no CPU version); on the CPU use 'bn' (per process) or 'gn'")


def sync_bn_parts(cfg: Config) -> List[str]:
    """The submodules of a Detector whose BatchNorm layers become SyncBatchNorm under torchrun:
    ``backbone.body`` when ``model.backbone.norm = sync_bn``, ``backbone.fpn`` when the FPN's norm is
    sync_bn (``fpn_norm = sync_bn``, or true with a sync_bn body). Other BatchNorm layers (a bn FPN,
    the box head's ``conv_norm = bn``) stay per process."""
    bb = cfg.model.backbone
    parts = ["backbone.body"] if bb.norm == "sync_bn" else []
    fpn_norm = bb.norm if bb.fpn_norm is True else bb.fpn_norm
    if fpn_norm == "sync_bn" and bb.features == "fpn":
        parts.append("backbone.fpn")
    return parts


def prepare_model(model: torch.nn.Module, cfg: Config, device: torch.device) -> torch.nn.Module:
    """SyncBatchNorm where the config asks for sync_bn (:func:`sync_bn_parts`), then
    DistributedDataParallel when distributed."""
    ctx = get_context()
    if not ctx.distributed:
        return model
    for part in sync_bn_parts(cfg):  # converted in place: their parent keeps the new children
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model.get_submodule(part))
    device_ids = [device.index if device.index is not None else ctx.local_rank] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
