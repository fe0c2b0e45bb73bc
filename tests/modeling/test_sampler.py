"""detkit.modeling.sampler.BalancedSampler: counts, fraction, determinism."""

from __future__ import annotations

import pytest
import torch

from detkit.modeling.sampler import BalancedSampler


def make_labels(num_pos, num_neg, num_ignore, seed=0):
    labels = torch.cat([torch.ones(num_pos), torch.zeros(num_neg), -torch.ones(num_ignore)]).to(torch.int8)
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]


@pytest.mark.parametrize("num_pos,num_neg,expected_pos,expected_neg", [
    (500, 5000, 128, 128),   # plenty of both
    (20, 5000, 20, 236),     # few positives: negatives fill the batch
    (500, 30, 128, 30),      # few negatives: the batch is smaller
    (0, 100, 0, 100),
    (0, 0, 0, 0),
])
def test_counts_follow_torchvision_rules(num_pos, num_neg, expected_pos, expected_neg):
    labels = make_labels(num_pos, num_neg, 77)
    pos, neg = BalancedSampler(batch_size_per_image=256, positive_fraction=0.5).sample(
        labels, torch.Generator().manual_seed(0))
    assert (pos.numel(), neg.numel()) == (expected_pos, expected_neg)
    assert pos.dtype == neg.dtype == torch.int64
    assert bool((labels[pos] == 1).all()) and bool((labels[neg] == 0).all())   # never an ignored one
    assert torch.equal(pos, pos.unique()) and torch.equal(neg, neg.unique())   # sorted, no repeats


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_positive_fraction(fraction):
    labels = make_labels(1000, 1000, 0)
    pos, neg = BalancedSampler(batch_size_per_image=512, positive_fraction=fraction).sample(
        labels, torch.Generator().manual_seed(1))
    assert pos.numel() == int(512 * fraction) and pos.numel() + neg.numel() == 512


def test_determinism_and_randomness():
    labels = make_labels(300, 3000, 100)
    sampler = BalancedSampler(batch_size_per_image=128, positive_fraction=0.25)
    first = sampler.sample(labels, torch.Generator().manual_seed(7))
    again = sampler.sample(labels, torch.Generator().manual_seed(7))
    other = sampler.sample(labels, torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], other[1])
    # every negative gets picked eventually: the choice is spread over all of them
    seen = torch.zeros(labels.numel(), dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        seen[sampler.sample(labels, gen)[1]] = True
    assert int(seen.sum()) > 0.95 * 3000


def test_invalid_arguments():
    with pytest.raises(ValueError, match="batch_size_per_image"):
        BalancedSampler(batch_size_per_image=0, positive_fraction=0.5)
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedSampler(batch_size_per_image=8, positive_fraction=1.5)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        BalancedSampler(batch_size_per_image=8, positive_fraction=0.5).sample(torch.zeros((2, 3), dtype=torch.int8))


def test_sampling_rng_stays_on_its_device_and_round_trips():
    from detkit.modeling.sampler import SamplingRNG

    rng = SamplingRNG(5)
    first = rng.on(torch.device("cpu"))
    assert first is rng.generator and rng.on(torch.device("cpu")) is first  # same stream, not restarted
    torch.randperm(10, generator=first)
    state = rng.state_dict()
    assert state["device"] == "cpu"
    expected = torch.randperm(10, generator=first)
    other = SamplingRNG(0)
    other.load_state_dict(state)
    assert other.seed == 5 and torch.equal(torch.randperm(10, generator=other.generator), expected)
    # per-image and validation generators are made on the stream's device
    assert rng.for_image({"sample_seed": 3}, first).device.type == "cpu"
    assert rng.fresh(torch.device("cpu")).device.type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the restart where no GPU is")
def test_cuda_sampling_state_restarts_from_the_seed_without_a_gpu():
    from detkit.modeling.sampler import SamplingRNG

    rng = SamplingRNG(7)
    rng.load_state_dict({"seed": torch.tensor(7), "state": torch.zeros(16, dtype=torch.uint8), "device": "cuda"})
    assert rng.generator.device.type == "cpu"
    assert torch.equal(rng.generator.get_state(), torch.Generator().manual_seed(7).get_state())

