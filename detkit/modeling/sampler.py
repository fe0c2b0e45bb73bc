"""Balanced sampling of positive and negative anchors (or proposals) for the losses.

Shape shorthand: N anchors or proposals, P sampled positives, Q sampled negatives.

Same counts as torchvision's ``BalancedPositiveNegativeSampler``: up to
``int(batch_size_per_image * positive_fraction)`` positives, and negatives fill the rest of the
batch; when there are too few of either, the batch is smaller. Labels -1 (ignored) are never
sampled. The random choice uses only the given torch.Generator, so a seed fixes the result; it is
drawn on the generator's device (a CUDA generator for labels on the GPU, so that no index travels
between host and device; CPU and CUDA streams differ, so the same seed picks other anchors there).

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
            generator: torch.Generator for the random choice, best on labels' device (another
                device's choice is copied over); None uses torch's default one on labels' device.
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
        pos_idx = positive[_choose(positive.numel(), num_pos, generator, labels.device).to(positive.device)]
        neg_idx = negative[_choose(negative.numel(), num_neg, generator, labels.device).to(negative.device)]
        return pos_idx.sort()[0], neg_idx.sort()[0]


def _choose(n: int, k: int, generator: Optional[torch.Generator], device: torch.device) -> Tensor:
    """k distinct positions out of n, uniformly at random (int64, on the generator's device)."""
    device = generator.device if generator is not None else device
    if k >= n:
        return torch.arange(n, device=device)
    return torch.randperm(n, generator=generator, device=device)[:k]


class SamplingRNG:
    """The seeded torch.Generator a sampling module owns, on the device the module samples on.

    The stream starts on the CPU; :meth:`on` moves it to the device of the labels (a CUDA generator
    for a model on the GPU: BalancedSampler then draws there). Moving to another kind of device
    restarts the stream from the seed (CPU and CUDA generators have different states; a model moves
    before its first step, so nothing is lost then). ``state_dict()`` / ``load_state_dict()`` let a
    checkpoint resume the exact sampling sequence on the same kind of device; a CUDA state loaded
    where no GPU is restarts from the seed. ``fresh()`` gives a new generator seeded identically on
    every call (used for validation losses in eval mode, so evaluation neither consumes nor depends
    on the training stream).
    """

    def __init__(self, seed: int, stream: int = 0) -> None:
        self.seed = int(seed)
        self.stream = int(stream)  # tells apart modules that share a seed (RPN 0, RoI head 1)
        self.generator = torch.Generator().manual_seed(self.seed)

    def on(self, device: torch.device) -> torch.Generator:
        """The module's stream on ``device`` (created there from the seed when it lives elsewhere)."""
        device = torch.device(device)
        if not _same_device(self.generator.device, device):
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        return self.generator

    def fresh(self, device: torch.device = torch.device("cpu")) -> torch.Generator:
        return torch.Generator(device=device).manual_seed(self.seed)

    def for_image(self, target: Dict[str, Tensor], default: torch.Generator) -> torch.Generator:
        """The generator for one image's sampling, on ``default``'s device.

        When the data pipeline gives the image a ``sample_seed`` (a function of seed, epoch and
        index), the choice depends on that image alone, not on which images came before it in
        this process: a DDP run then samples exactly what a single-process run does. Otherwise
        ``default`` (the module's stream) is used.
        """
        sample_seed = target.get("sample_seed")
        if sample_seed is None:
            return default
        mixed = (int(sample_seed) * 6364136223846793005 + self.seed * 1442695040888963407 + self.stream) % (1 << 63)
        return torch.Generator(device=default.device).manual_seed(mixed)

    def state_dict(self) -> Dict[str, object]:
        return {"seed": torch.tensor(self.seed), "state": self.generator.get_state(),
                "device": self.generator.device.type}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        self.seed = int(state["seed"])
        kind = state.get("device", "cpu")
        if kind != "cpu" and not (kind == "cuda" and torch.cuda.is_available()):
            self.generator = torch.Generator().manual_seed(self.seed)  # no such device here: restart
            return
        self.generator = torch.Generator(device=kind)
        self.generator.set_state(state["state"])


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (a.index if a.index is not None else current) == (b.index if b.index is not None else current)
