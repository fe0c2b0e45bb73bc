"""Precise BatchNorm statistics: re-estimate the running mean and variance with the current weights.

Why: in training every BatchNorm layer normalises by the statistics of its own batch (two images
under protocol P1), but at test time it uses running averages: an exponential average (momentum
0.1, so roughly the last 10 to 20 iterations) of batch statistics that were computed while the
weights were still moving. Those averages lag behind the final weights and are noisy, a
train/test mismatch that small-batch detection training feels (Wu & Johnson, "Rethinking 'Batch'
in BatchNorm", 2021; Detectron2's PreciseBN hook). Recomputing them as a plain average over many
batches with the weights frozen removes both problems. It changes no parameter, and training is
unaffected (BatchNorm in training mode never reads its running statistics).

Measured on BCCD under protocol P1 (the final weights of the manual-anchor run, 103 batches of 2):
mAP 0.572 -> 0.577 (benchmarks/results/bccd_p1.md).

The statistics of each layer are the mean over batches of the batch mean and of the (unbiased)
batch variance, as Detectron2's ``update_bn_stats``; under torch.distributed every process runs
the same number of batches on its own shard and the results are averaged over processes (with
SyncBatchNorm the batch statistics are already global, and the average leaves them unchanged).
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional

import torch
from torch import Tensor, nn

from detkit.config import Config, replace_values
from detkit.runtime import distributed as dist
from detkit.runtime.precision import Precision, autocast_of

__all__ = ["batch_norm_layers", "recompute_bn_stats", "refresh_detector_bn_stats"]


def batch_norm_layers(model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers (1d/2d/3d and SyncBatchNorm) that keep running statistics.

    FrozenBatchNorm2d is not one of them: its statistics are fixed by design.
    """
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, forward: Callable[[object], object], batches: Iterable,
                       num_batches: int) -> int:
    """Replace the running statistics of every BatchNorm layer of ``model`` by their average over batches.

    Args:
        model: the module whose BatchNorm layers are updated (put in training mode for the passes,
            its previous mode restored afterwards).
        forward: runs the part of ``model`` that holds the BatchNorm layers on one item of ``batches``
            (for a Detector: preprocess the images, then the backbone).
        batches: an iterable of inputs for ``forward``; the first ``num_batches`` are used.
        num_batches: how many batches to average over (> 0). Under torch.distributed every process
            must run the same number.
    Returns:
        the number of batches used (0 when the model has no BatchNorm layer with running statistics:
        nothing is run then).
    """
    layers = batch_norm_layers(model)
    if not layers or num_batches <= 0:
        return 0
    was_training = model.training
    momenta = [bn.momentum for bn in layers]
    # The passes are not training batches: num_batches_tracked keeps its count (and a resumed run
    # its exact state).
    tracked = [bn.num_batches_tracked.clone() for bn in layers]
    # momentum 1.0: after each forward a layer's running buffers hold exactly that batch's statistics.
    for bn in layers:
        bn.momentum = 1.0
    sums_mean = [torch.zeros_like(bn.running_mean) for bn in layers]
    sums_var = [torch.zeros_like(bn.running_var) for bn in layers]
    used = 0
    model.train()
    try:
        for batch in batches:
            if used == num_batches:
                break
            forward(batch)
            for bn, s_mean, s_var in zip(layers, sums_mean, sums_var):
                s_mean += bn.running_mean
                s_var += bn.running_var
            used += 1
    finally:
        for bn, momentum, count in zip(layers, momenta, tracked):
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(count)
        model.train(was_training)
    if used == 0:
        raise ValueError("recompute_bn_stats: the batches were empty; nothing to estimate the statistics from")
    # One collective for every layer: [means of all layers, variances of all layers] averaged over processes.
    flat: Tensor = dist.mean_over_processes(torch.cat([s.flatten() for s in sums_mean + sums_var]) / used)
    offset = 0
    for bn in layers:
        n = bn.running_mean.numel()
        bn.running_mean.copy_(flat[offset:offset + n])
        offset += n
    for bn in layers:
        n = bn.running_var.numel()
        bn.running_var.copy_(flat[offset:offset + n])
        offset += n
    return used


def refresh_detector_bn_stats(detector: nn.Module, cfg: Config, train_set, device: torch.device, *,
                              num_batches: int, distributed: bool = False,
                              precision: Optional[Precision] = None) -> int:
    """Precise statistics for a Detector's backbone over its training set, seen as at test time.

    The batches are ``cfg.train.batch_size`` training images (the global batch, split over the
    processes when ``distributed``), resized without augmentation, in data-set order; at most one
    pass. Returns the number of batches used (0: no BatchNorm layer, or ``num_batches`` 0).
    """
    from detkit.data.loader import build_loader  # engine may use data; modeling may not

    if num_batches <= 0 or not batch_norm_layers(detector.backbone):
        return 0
    if cfg.data.test_resize != "pipeline":  # the detector resizes only in eval mode; here it is in train mode
        cfg = replace_values(cfg, {"data.test_resize": "pipeline"})
    loader = build_loader(cfg, "train", dataset=train_set, train=False, shuffle=False, distributed=distributed)

    def forward(batch) -> None:
        images = [img.to(device) for img in batch[0]]
        with autocast_of(precision):
            detector.backbone(detector.preprocess(images)[0])

    return recompute_bn_stats(detector.backbone, forward, loader, min(num_batches, len(loader)))
