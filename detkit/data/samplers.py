"""Batch samplers: aspect-ratio grouped training batches and sharded inference batches.

Both are ready for several processes (DistributedDataParallel): give ``num_replicas`` and
``rank`` and each rank gets its own share, every rank the same number of batches (so no rank
waits forever in a collective). With the defaults (1, 0) they are ordinary samplers.
"""

from __future__ import annotations

import math
from typing import Iterator, List, Sequence, Tuple

import numpy as np
from torch.utils.data import Sampler

__all__ = ["GroupedBatchSampler", "InferenceBatchSampler", "aspect_ratio_groups"]


def aspect_ratio_groups(sizes: Sequence[Tuple[int, int]]) -> np.ndarray:
    """Group id per image from its (h, w): 0 = landscape or square (w >= h), 1 = portrait."""
    return np.array([0 if w >= h else 1 for h, w in sizes], dtype=np.int64)


def _check_replicas(num_replicas: int, rank: int) -> None:
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")


class GroupedBatchSampler(Sampler[List[int]]):
    """Shuffled training batches whose images share an aspect-ratio group (less padding).

    Each epoch: a permutation of all indices from ``(seed, epoch)``; indices are dealt into their
    group's buffer and a *global* batch (``batch_size x num_replicas`` images) is emitted whenever
    a buffer is full; the remaining partial batches (at most one per group) follow; the batch
    order is shuffled. Rank r takes images ``[r * batch_size, (r + 1) * batch_size)`` of every
    global batch. So step t trains on the same images with one process of batch B as with N
    processes of batch B / N (what makes a DDP run equal to a single-process run), every index
    is used once per epoch, and all ranks see the same number of batches. A partial global batch
    too small to give every rank ``batch_size`` images is topped up by repeating its own images
    (its first image when it is split over more ranks than it has images).

    Args:
        group_ids: (N,) group of each image (see :func:`aspect_ratio_groups`); all zeros = no grouping.
        batch_size: images per batch on one replica.
        seed: base seed; the epoch is mixed in (call :meth:`set_epoch` every epoch).
        shuffle: False keeps index order (grouping still applies).
        num_replicas, rank: the process count and this process's rank.
    """

    def __init__(self, group_ids: Sequence[int], batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _check_replicas(num_replicas, rank)
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.skip = 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_skip(self, num_batches: int) -> None:
        """Leave out the first ``num_batches`` batches of this replica's epoch (resuming mid-epoch).

        The batches are the same as without skipping, minus the first ones; ``len()`` is unchanged.
        """
        self.skip = max(0, int(num_batches))

    def _global_batches(self) -> List[List[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.group_ids)) if self.shuffle else np.arange(len(self.group_ids))
        size = self.global_batch_size
        buffers: dict = {}
        batches: List[List[int]] = []
        for idx in order.tolist():
            buf = buffers.setdefault(int(self.group_ids[idx]), [])
            buf.append(idx)
            if len(buf) == size:
                batches.append(buf)
                buffers[int(self.group_ids[idx])] = []
        batches.extend(buf for _, buf in sorted(buffers.items()) if buf)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches)).tolist()]
        return batches

    def __len__(self) -> int:
        counts = np.bincount(self.group_ids - self.group_ids.min()) if len(self.group_ids) else np.zeros(0)
        return int(sum(math.ceil(c / self.global_batch_size) for c in counts.tolist()))

    def _share(self, batch: List[int]) -> List[int]:
        """This rank's images of one global batch."""
        if len(batch) == self.global_batch_size or self.num_replicas == 1:
            return batch[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        per_rank = math.ceil(len(batch) / self.num_replicas)
        share = batch[self.rank * per_rank:(self.rank + 1) * per_rank]
        if not share:
            share = batch[:1]
        return (share * per_rank)[:per_rank] if len(share) < per_rank else share

    def __iter__(self) -> Iterator[List[int]]:
        for batch in self._global_batches()[self.skip:]:
            yield self._share(batch)


class InferenceBatchSampler(Sampler[List[int]]):
    """Batches in index order over this rank's share (indices rank, rank + num_replicas, ...), no padding.

    No index is repeated, so evaluation results gathered from all ranks count every image once;
    ranks may differ by one batch (evaluation has no collective inside the loop).
    """

    def __init__(self, num_samples: int, batch_size: int, *, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _check_replicas(num_replicas, rank)
        self.indices = list(range(rank, num_samples, num_replicas))
        self.batch_size = batch_size

    def set_epoch(self, epoch: int) -> None:  # same interface as the training sampler
        pass

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self) -> Iterator[List[int]]:
        for start in range(0, len(self.indices), self.batch_size):
            yield self.indices[start:start + self.batch_size]
