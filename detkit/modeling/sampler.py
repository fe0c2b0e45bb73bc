"""Balanced sampling of positive and negative anchors (or proposals) for the losses.

Shape shorthand: N anchors or proposals, P sampled positives, Q sampled negatives.

Same counts as torchvision's ``BalancedPositiveNegativeSampler``: up to
``int(batch_size_per_image * positive_fraction)`` positives, and negatives fill the rest of the
batch; when there are too few of either, the batch is smaller. Labels -1 (ignored) are never
sampled. The random choice uses only the given torch.Generator, so a seed fixes the result.

:class:`SamplingRNG` is the seeded generator a sampling module (the RPN, the RoI head) owns and
hands to the sampler: one stream per module, a per-image generator when the data pipeline gives
the image a ``sample_seed``, and a state dict for checkpoints.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor

__all__ = ["BalancedSampler", "SamplingRNG"]


class BalancedSampler:
    """Pick a fixed-size batch of positives and negatives with a target positive fraction.

    Args:
        batch_size_per_image: total samples per image (> 0).
        positive_fraction: largest share of positives in the batch, in [0, 1].
    """

    def __init__(self, *, batch_size_per_image: int, positive_fraction: float):
        if int(batch_size_per_image) != batch_size_per_image or batch_size_per_image <= 0:
            raise ValueError(f"batch_size_per_image must be a positive integer, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __repr__(self) -> str:
        return (f"BalancedSampler(batch_size_per_image={self.batch_size_per_image}, "
                f"positive_fraction={self.positive_fraction})")

    def sample(self, labels: Tensor, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
        """Choose positives (label 1) and negatives (label 0) without replacement.

        Args:
            labels: Tensor[N] int8 (or any integer dtype) in {-1, 0, 1}.
            generator: CPU torch.Generator for the random choice; None uses torch's default one.
        Returns:
            (pos_idx Tensor[P] int64, neg_idx Tensor[Q] int64), each sorted increasingly, on
            labels' device; P <= int(batch * fraction), P + Q <= batch.
        """
        if labels.dim() != 1:
            raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}")
        positive = torch.where(labels == 1)[0]
        negative = torch.where(labels == 0)[0]
        num_pos = min(positive.numel(), int(self.batch_size_per_image * self.positive_fraction))
        num_neg = min(negative.numel(), self.batch_size_per_image - num_pos)
        pos_idx = positive[_choose(positive.numel(), num_pos, generator).to(positive.device)]
        neg_idx = negative[_choose(negative.numel(), num_neg, generator).to(negative.device)]
        return pos_idx.sort()[0], neg_idx.sort()[0]


def _choose(n: int, k: int, generator: Optional[torch.Generator]) -> Tensor:
    """k distinct positions out of n, uniformly at random (CPU, int64)."""
    if k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:k]


class SamplingRNG:
    """The seeded CPU torch.Generator a sampling module owns (BalancedSampler draws on the CPU).

    ``state_dict()`` / ``load_state_dict()`` let a checkpoint resume the exact sampling sequence.
    ``fresh()`` gives a new generator seeded identically on every call (used for validation losses
    in eval mode, so evaluation neither consumes nor depends on the training stream).
    """

    def __init__(self, seed: int, stream: int = 0) -> None:
        self.seed = int(seed)
        self.stream = int(stream)  # tells apart modules that share a seed (RPN 0, RoI head 1)
        self.generator = torch.Generator().manual_seed(self.seed)

    def fresh(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def for_image(self, target: Dict[str, Tensor], default: torch.Generator) -> torch.Generator:
        """The generator for one image's sampling.

        When the data pipeline gives the image a ``sample_seed`` (a function of seed, epoch and
        index), the choice depends on that image alone, not on which images came before it in
        this process: a DDP run then samples exactly what a single-process run does. Otherwise
        ``default`` (the module's stream) is used.
        """
        sample_seed = target.get("sample_seed")
        if sample_seed is None:
            return default
        mixed = (int(sample_seed) * 6364136223846793005 + self.seed * 1442695040888963407 + self.stream) % (1 << 63)
        return torch.Generator().manual_seed(mixed)

    def state_dict(self) -> Dict[str, Tensor]:
        return {"seed": torch.tensor(self.seed), "state": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Tensor]) -> None:
        self.seed = int(state["seed"])
        self.generator.set_state(state["state"])
