"""Data sets and loaders from the config: build_dataset, build_loader, collate, resized boxes for anchors.

Batches are ``(images, targets)``: ``images`` a list of float32 tensors (3, H, W) in [0, 1] (sizes
may differ; the detector pads them), ``targets`` a list of dicts with torch tensors ``boxes``
float32 (N, 4), ``labels`` int64 (N,), ``ignore_boxes`` float32 (G, 4), ``ignore_labels`` int64 (G,)
in the resized image's coordinates, plus ``image_id`` int, ``orig_size`` (h, w), ``file_name`` str
``scale`` (sy, sx) (resized / original) and ``sample_seed`` (an int from (seed, epoch, index) that
seeds the model's per-image sampling).

Paths in the config: VOC roots and COCO files are taken relative to the current directory;
a COCO ``ann_file`` / ``img_dir`` is relative to the split's first root when roots are given.
"""

from __future__ import annotations

import copy
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detkit.config import Config, DataConfig
from detkit.data.auto_split import auto_split_enabled, split_from_file, stratified_split, subset
from detkit.data.coco import COCODataset
from detkit.data.dataset import DetectionDataset, resolve_path
from detkit.data.samplers import GroupedBatchSampler, InferenceBatchSampler, aspect_ratio_groups
from detkit.data.synthetic import prepare_synthetic
from detkit.data.transforms import DetectionTransform, build_transforms, resize_scale, resized_size
from detkit.data.voc import VOCDataset, discover_voc_classes
from detkit.data.yolo import YOLODataset
from detkit.errors import ConfigError

__all__ = ["build_dataset", "build_loader", "collate", "TransformedDataset", "DetectionLoader",
           "resized_annotations", "box_shapes_after_resize"]

SPLITS = ("train", "val")


# --------------------------------------------------------------------------- data sets
def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split {split!r} is not valid; choose one of {SPLITS}")


def build_dataset(cfg: Config, split: str, *, classes: Optional[Sequence[str]] = None,
                  log_report: bool = True) -> DetectionDataset:
    """The raw data set (no transforms) of `split` ('train' or 'val') for cfg.data.format.

    Args:
        classes: class names to use (e.g. the training set's, for 'val'); default data.classes,
            else the data set's own (VOC 'val' discovers them on the training split).
    """
    _check_split(split)
    d = cfg.data
    if auto_split_enabled(d):
        return _auto_split_part(cfg, split, classes, log_report)
    classes = list(classes) if classes is not None else d.classes
    s = getattr(d, split)
    if d.format == "synthetic":
        json_path, img_dir = prepare_synthetic(d.synthetic, classes)[split]
        return COCODataset(ann_file=json_path, img_dir=img_dir, classes=classes, drop_empty=d.drop_empty,
                           log_report=log_report, index_cache=d.index_cache, cache_dir=d.index_cache_dir)
    if d.format == "voc":
        if classes is None and split == "val":
            t = d.train
            classes = discover_voc_classes(roots=t.roots, splits=t.splits, ann_dir=t.ann_dir, split_file=t.split_file)
        return VOCDataset(roots=s.roots, splits=s.splits, ann_dir=s.ann_dir, img_dir=s.img_dir,
                          split_file=s.split_file, classes=classes, difficult=d.difficult,
                          skip_bad_images=d.skip_bad_images, ignore_unknown_classes=d.ignore_unknown_classes,
                          skip_bad_annotations=d.skip_bad_annotations, log_report=log_report)
    if d.format == "yolo":
        if classes is None and split == "val" and d.train.roots:  # the training root's names file
            classes = YOLODataset.find_names(resolve_path(d.train.roots[0]), d.names_file)
        return YOLODataset(roots=s.roots, splits=s.splits, split_file=s.split_file, classes=classes,
                           names_file=d.names_file, skip_bad_images=d.skip_bad_images,
                           ignore_unknown_classes=d.ignore_unknown_classes,
                           skip_bad_annotations=d.skip_bad_annotations, log_report=log_report)
    base = resolve_path(s.roots[0]) if s.roots else None
    if s.ann_file is None:
        raise ConfigError(f"key 'data.{split}.ann_file' is required when data.format = 'coco'")
    return COCODataset(ann_file=resolve_path(s.ann_file, base), img_dir=resolve_path(s.img_dir, base),
                       classes=classes, skip_bad_images=d.skip_bad_images,
                       ignore_unknown_classes=d.ignore_unknown_classes, drop_empty=d.drop_empty,
                       skip_bad_annotations=d.skip_bad_annotations, log_report=log_report,
                       index_cache=d.index_cache, cache_dir=d.index_cache_dir)


def _auto_split_part(cfg: Config, split: str, classes: Optional[Sequence[str]], log_report: bool) -> DetectionDataset:
    """One side of data.train's source divided by data.auto_split (detkit/data/auto_split.py)."""
    whole_cfg = copy.deepcopy(cfg)
    whole_cfg.data.auto_split.val_fraction = whole_cfg.data.auto_split.file = None
    # The whole set is read for each side; its report is logged once, with the training side.
    whole = build_dataset(whole_cfg, "train", classes=classes, log_report=log_report and split == "train")
    a = cfg.data.auto_split
    if a.file is not None:
        train_idx, val_idx = split_from_file(whole, resolve_path(a.file))
    else:
        train_idx, val_idx = stratified_split([whole.index.labels[whole.index.box_slice(i)] for i in range(len(whole))],
                                              a.val_fraction, a.seed)
    return subset(whole, train_idx if split == "train" else val_idx, split)


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
    _check_split(split)
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


# --------------------------------------------------------------------------- anchor fitting
def resized_annotations(dataset, data_cfg: DataConfig, *, min_size: Optional[Sequence[int]] = None,
                        max_size: Optional[int] = None) -> List[dict]:
    """Every image's boxes after the resize, without decoding an image.

    Args:
        dataset: any detkit data set (uses image_sizes and get_annotation).
        min_size: shorter-side sizes to resize to (default: data_cfg.min_size, the training scales;
            with several, each image appears once per size). Scale jitter and crops are not applied.
        max_size: default data_cfg.max_size.

    Returns:
        list of {"index": i, "boxes": float32 (N, 4) resized, "size": (h, w) resized, "scale": (sy, sx)}.
    """
    sizes = list(data_cfg.min_size) if min_size is None else [int(s) for s in np.atleast_1d(min_size)]
    max_size = data_cfg.max_size if max_size is None else int(max_size)
    out = []
    for i, (h, w) in enumerate(dataset.image_sizes):
        boxes = dataset.get_annotation(i)["boxes"]
        for s in sizes:
            nh, nw = resized_size((h, w), resize_scale((h, w), s, max_size))
            sy, sx = nh / h, nw / w
            out.append({"index": i, "boxes": (boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32),
                        "size": (nh, nw), "scale": (sy, sx)})
    return out


def box_shapes_after_resize(dataset, data_cfg: DataConfig, *, min_size: Optional[Sequence[int]] = None,
                            max_size: Optional[int] = None) -> np.ndarray:
    """(N, 2) float32 (w, h) of every training box after the resize (see :func:`resized_annotations`)."""
    entries = resized_annotations(dataset, data_cfg, min_size=min_size, max_size=max_size)
    boxes = [e["boxes"] for e in entries if len(e["boxes"])]
    if not boxes:
        return np.zeros((0, 2), np.float32)
    allb = np.concatenate(boxes)
    return np.stack([allb[:, 2] - allb[:, 0], allb[:, 3] - allb[:, 1]], axis=1).astype(np.float32)
