"""detkit/data/loader.py and samplers.py: batches, grouped / sharded sampling, determinism."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from data_helpers import tiny_synthetic_config

from detkit.data.loader import build_loader
from detkit.data.samplers import GroupedBatchSampler, InferenceBatchSampler, aspect_ratio_groups
from detkit.errors import ConfigError


@pytest.fixture
def synth_cfg(tmp_path):
    return tiny_synthetic_config(tmp_path / "cache")


def test_batches_follow_the_contract(synth_cfg):
    loader = build_loader(synth_cfg, "train")
    seen = []
    for images, targets in loader:
        assert isinstance(images, list) and len(images) == len(targets) <= 2
        for image, t in zip(images, targets):
            assert image.dtype == torch.float32 and image.shape[0] == 3 and 0 <= image.min() and image.max() <= 1
            h, w = image.shape[1:]
            assert t["boxes"].dtype == torch.float32 and t["boxes"].shape[1] == 4
            assert t["labels"].dtype == torch.int64 and len(t["labels"]) == len(t["boxes"])
            assert t["ignore_boxes"].shape == (0, 4)
            if len(t["boxes"]):
                assert (t["boxes"][:, 2] <= w).all() and (t["boxes"][:, 3] <= h).all()
                assert ((t["labels"] >= 1) & (t["labels"] <= 3)).all()
            assert t["orig_size"] == (64, 64) and t["scale"] == (1.0, 1.0)
            seen.append(t["image_id"])
    assert sorted(seen) == list(range(1, 7))
    assert loader.dataset.classes == ["circle", "square", "triangle"]  # forwarded from the data set


def test_val_loader_in_order_with_eval_batch(synth_cfg):
    loader = build_loader(synth_cfg, "val", batch_size=3)
    ids = [t["image_id"] for _, targets in loader for t in targets]
    assert ids == [1, 2, 3, 4] and len(loader) == 2


def _ids(loader):
    return [[t["image_id"] for t in targets] for _, targets in loader]


def test_loader_determinism_epochs_and_workers(synth_cfg):
    a, b = build_loader(synth_cfg, "train", seed=5), build_loader(synth_cfg, "train", seed=5)
    epoch0_a, epoch0_b = list(a), list(b)
    for (ia, ta), (ib, tb) in zip(epoch0_a, epoch0_b):
        assert all(torch.equal(x, y) for x, y in zip(ia, ib))
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb))
    orders = [_ids(a) for _ in range(3)]  # epochs 1, 2, 3: the order changes with the epoch
    assert len({str(o) for o in orders}) > 1
    a.set_epoch(0)
    assert _ids(a) == [[t["image_id"] for t in targets] for _, targets in epoch0_a]
    workers = build_loader(synth_cfg, "train", seed=5, num_workers=2)
    for (ia, _), (iw, _) in zip(epoch0_a, workers):  # same batches whatever the number of workers
        assert all(torch.equal(x, y) for x, y in zip(ia, iw))


def test_grouped_sampler_groups_covers_and_shuffles():
    groups = np.array([0, 1] * 7 + [0, 0, 0])
    s = GroupedBatchSampler(groups, 3, seed=1)
    batches = list(s)
    assert len(batches) == len(s)
    assert sorted(i for b in batches for i in b) == list(range(len(groups)))
    assert all(len(set(groups[b])) == 1 for b in batches)
    s.set_epoch(1)
    assert list(s) != batches
    s.set_epoch(0)
    assert list(s) == batches


@pytest.mark.parametrize("n,world", [(17, 2), (10, 3), (5, 4)])
def test_grouped_sampler_shards_evenly(n, world):
    groups = aspect_ratio_groups([(10, 20) if i % 3 else (20, 10) for i in range(n)])
    shards = [list(GroupedBatchSampler(groups, 2, seed=0, num_replicas=world, rank=r)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    used = Counter(i for s in shards for b in s for i in b)
    assert set(used) == set(range(n))  # every image used; only padding repeats
    with pytest.raises(ValueError):
        GroupedBatchSampler(groups, 2, num_replicas=2, rank=2)


def test_inference_sampler_shards_without_repeats():
    shards = [list(InferenceBatchSampler(11, 2, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for s in shards for b in s for i in b) == list(range(11))


def test_distributed_loader_splits_global_batch(synth_cfg):
    loaders = [build_loader(synth_cfg, "train", distributed=True, num_replicas=2, rank=r) for r in range(2)]
    ids = [[i for b in _ids(lo) for i in b] for lo in loaders]
    assert all(len(b) == 1 for b in _ids(loaders[0]))  # global batch 2 over 2 processes
    assert sorted(ids[0] + ids[1]) == list(range(1, 7))
    with pytest.raises(ConfigError, match="divisible"):
        build_loader(synth_cfg, "train", distributed=True, num_replicas=4, rank=0)


def test_replicas_split_the_single_process_global_batches():
    # step t of N processes with batch B/N trains on exactly the images of step t of one process with batch B
    from detkit.data.samplers import GroupedBatchSampler

    groups = np.array([0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0])
    for epoch in range(3):
        single = GroupedBatchSampler(groups, 4, seed=5)
        single.set_epoch(epoch)
        shards = []
        for rank in range(2):
            sampler = GroupedBatchSampler(groups, 2, seed=5, num_replicas=2, rank=rank)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        single_batches = list(single)
        assert len(single_batches) == len(shards[0]) == len(shards[1])
        for step, batch in enumerate(single_batches):
            if len(batch) == 4:
                assert shards[0][step] + shards[1][step] == batch
            else:  # a partial batch is split as evenly as possible, topped up from itself
                assert set(shards[0][step] + shards[1][step]) == set(batch)
                assert len(shards[0][step]) == len(shards[1][step])
