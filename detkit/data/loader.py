"""Loaders from the config: build_loader, the per-sample transform wrapper, collate.

Batches are ``(images, targets)``: ``images`` a list of float32 tensors (3, H, W) in [0, 1] (sizes
may differ; the detector pads them), ``targets`` a list of dicts with torch tensors ``boxes``
float32 (N, 4), ``labels`` int64 (N,), ``ignore_boxes`` float32 (G, 4), ``ignore_labels`` int64 (G,)
in the resized image's coordinates, plus ``image_id`` int, ``orig_size`` (h, w), ``file_name`` str
``scale`` (sy, sx) (resized / original) and ``sample_seed`` (an int from (seed, epoch, index) that
seeds the model's per-image sampling).

The raw data sets come from detkit/data/formats.py (``build_dataset``).
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detkit.config import Config
from detkit.data.dataset import DetectionDataset
from detkit.data.formats import build_dataset, check_split
from detkit.data.samplers import GroupedBatchSampler, InferenceBatchSampler, aspect_ratio_groups
from detkit.data.transforms import DetectionTransform, build_transforms
from detkit.errors import ConfigError

__all__ = ["build_loader", "collate", "TransformedDataset", "DetectionLoader"]


# --------------------------------------------------------------------------- samples
class TransformedDataset(Dataset):
    """A data set with a transform applied per sample, reseeded from (seed, epoch, index).

    The class list, report and annotation access of the wrapped data set are forwarded.
    """

    def __init__(self, dataset: DetectionDataset, transform: DetectionTransform, *, seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.transform(self.dataset[index], rng_seed=(self.seed, self.epoch, int(index)))
        # A seed for the model's per-image random choices (anchor / RoI sampling), a function of
        # (seed, epoch, index) like the augmentation: the same image at the same step samples the
        # same anchors in any process layout, which makes DDP runs equal single-process runs.
        sample["sample_seed"] = int(np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(
            1, dtype=np.uint64)[0] >> np.uint64(1))
        return sample

    def __getattr__(self, name: str):  # classes, category_ids, report, get_annotation, image_sizes, ...
        if name in ("dataset", "transform", "seed", "epoch"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


# --------------------------------------------------------------------------- batches
def collate(batch: Sequence[dict]) -> Tuple[List[torch.Tensor], List[dict]]:
    """Samples -> (images: list of float32 (3, H, W) in [0, 1], targets: list of dicts of tensors)."""
    images, targets = [], []
    for sample in batch:
        image = np.ascontiguousarray(sample["image"].transpose(2, 0, 1))  # (H, W, 3) -> (3, H, W)
        images.append(torch.from_numpy(image).float().div_(255.0))
        ignore = sample.get("ignore_boxes", np.zeros((0, 4), np.float32))
        targets.append({
            "boxes": torch.as_tensor(sample["boxes"], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(sample["labels"], dtype=torch.int64).reshape(-1),
            "ignore_boxes": torch.as_tensor(ignore, dtype=torch.float32).reshape(-1, 4),
            "ignore_labels": torch.as_tensor(sample.get("ignore_labels", np.zeros(len(ignore), np.int64)),
                                             dtype=torch.int64).reshape(-1),
            "image_id": int(sample["image_id"]),
            "orig_size": tuple(int(v) for v in sample["orig_size"]),
            "file_name": sample["file_name"],
            "scale": tuple(float(v) for v in sample.get("scale", (1.0, 1.0))),
        })
        if "sample_seed" in sample:
            targets[-1]["sample_seed"] = int(sample["sample_seed"])
    return images, targets


def _worker_init(worker_id: int) -> None:
    # Augmentation is seeded per sample; here only keep the worker from oversubscribing the CPU.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class DetectionLoader(DataLoader):
    """A DataLoader that advances the epoch of its sampler and its transforms on every pass.

    Each ``iter(loader)`` uses the current epoch, then counts it up; :meth:`set_epoch` sets it
    (e.g. when resuming). The batches of an epoch therefore depend only on the seed and the epoch.
    """

    def __init__(self, dataset: TransformedDataset, *, batch_sampler, num_workers: int, seed: int,
                 pin_memory: bool = False) -> None:
        super().__init__(dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=collate,
                         worker_init_fn=_worker_init if num_workers > 0 else None,
                         generator=torch.Generator().manual_seed(int(seed)), pin_memory=pin_memory)
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = int(epoch)

    def __iter__(self):
        epoch, self._epoch = self._epoch, self._epoch + 1
        self.batch_sampler.set_epoch(epoch)
        self.dataset.epoch = epoch
        return super().__iter__()


def _replicas(distributed: bool, num_replicas: Optional[int], rank: Optional[int]) -> Tuple[int, int]:
    if not distributed:
        return 1, 0
    if num_replicas is None or rank is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            num_replicas = torch.distributed.get_world_size() if num_replicas is None else num_replicas
            rank = torch.distributed.get_rank() if rank is None else rank
        else:
            num_replicas, rank = num_replicas or 1, rank or 0
    return int(num_replicas), int(rank)


def build_loader(cfg: Config, split: str, *, dataset: Optional[DetectionDataset] = None,
                 shuffle: Optional[bool] = None, batch_size: Optional[int] = None, seed: Optional[int] = None,
                 train: Optional[bool] = None, num_workers: Optional[int] = None, distributed: bool = False,
                 num_replicas: Optional[int] = None, rank: Optional[int] = None,
                 pin_memory: bool = False) -> DetectionLoader:
    """A loader of transformed, collated batches for `split`.

    Args:
        dataset: the raw data set (default: build_dataset(cfg, split)).
        shuffle: default True for 'train', False for 'val'.
        batch_size: default train.batch_size (the global batch, divided among replicas) for
            'train', eval.batch_size (per process) for 'val'.
        seed: default train.seed (sampler order and augmentation).
        train: use the train preset (default: split == 'train'); False = resize only.
        num_workers: default data.num_workers.
        distributed: shard over processes; num_replicas / rank default to torch.distributed's.
    """
    check_split(split)
    train = split == "train" if train is None else train
    shuffle = split == "train" if shuffle is None else shuffle
    seed = cfg.train.seed if seed is None else seed
    dataset = build_dataset(cfg, split) if dataset is None else dataset
    num_replicas, rank = _replicas(distributed, num_replicas, rank)
    transform = build_transforms(cfg.data, train=train, seed=seed)
    if split == "train":
        total = cfg.train.batch_size if batch_size is None else batch_size
        if total % num_replicas:
            raise ConfigError(f"key 'train.batch_size' = {total} (the global batch) must be divisible by "
                              f"the number of processes ({num_replicas})")
        groups = (aspect_ratio_groups(dataset.image_sizes) if cfg.data.aspect_ratio_grouping
                  else np.zeros(len(dataset), np.int64))
        sampler = GroupedBatchSampler(groups, total // num_replicas, seed=seed, shuffle=shuffle,
                                      num_replicas=num_replicas, rank=rank)
    else:
        per_process = cfg.eval.batch_size if batch_size is None else batch_size
        sampler = InferenceBatchSampler(len(dataset), per_process, num_replicas=num_replicas, rank=rank)
    workers = cfg.data.num_workers if num_workers is None else num_workers
    return DetectionLoader(TransformedDataset(dataset, transform, seed=seed), batch_sampler=sampler,
                           num_workers=workers, seed=seed, pin_memory=pin_memory)
