"""Learned anchor shapes: a differentiable fit of log(w), log(h) per anchor to the training boxes.

Shape shorthand: N training boxes, L levels, A anchor shapes per level.

Why not through the RPN loss: under the delta codec the gradient of the regression loss with
respect to an anchor's log-size equals the gradient to the regression bias, and anchors act
through IoU matching, which is not differentiable. So the anchors get their own objective
(docs/anchors.md): for every box a smooth best IoU over all anchors (the IoUs weighted by a softmax
with temperature T over them, the weights held constant within a step) plus a soft recall at 0.7
(a sigmoid of that smooth best IoU around 0.7), maximised with Adam on full batches (cosine-decayed
learning rate; the best iterate by the hard metrics is kept). The IoU is grid-aware when the boxes' per-level offsets
to the nearest anchor centre are given (:func:`detkit.anchors.metrics.grid_offsets`), centred
(IoU_c) otherwise. After every step each anchor is projected into its level's band
(``band[0] * stride <= sqrt(w*h) <= band[1] * stride``) with ``h / w`` in ``[1/8, 8]``.

Guards: a hinge penalty keeps the anchors of a level apart (IoU_c under `collapse_iou`), and every
`revive_every` steps (and at the end) an anchor that is no box's best, or that nearly duplicates
another anchor of its level, is moved onto the worst-served box of its level (levels with at least
A boxes by :func:`detkit.anchors.fit.assign_levels`; empty levels keep their shapes).

Online refinement during LR warm-up: the trainer may keep a :class:`LearnedAnchors` and call
:meth:`LearnedAnchors.step` with each warm-up batch's boxes (and offsets), then pass
:attr:`LearnedAnchors.shapes` to ``AnchorGenerator.set_shapes``; after warm-up it stops calling
(the anchors are frozen) and stores the final shapes in the config and checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from detkit.anchors.fit import MIN_FIT_SIDE, FitResult, anchor_fitness, assign_levels, decide
from detkit.anchors.kernels import box_objective
from detkit.anchors.metrics import offset_iou
from detkit.ops.boxes import centred_iou

__all__ = ["LearnedAnchors", "fit_learned", "MAX_ASPECT"]

# h / w of a learned anchor stays within [1 / MAX_ASPECT, MAX_ASPECT].
MAX_ASPECT = 8.0
# Boxes per partial sum of the fused objective kernel (fixes its summation order; not a limit).
_BLOCK = 4096


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run small-tensor torch work on one thread (thread hand-off costs more than it saves here)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _as_float(x: np.ndarray | Tensor) -> Tensor:
    """Boxes and offsets as float32: the per-box work dominates and float32 halves it; the
    parameters, their projection and the anchor-pair terms stay float64."""
    return x.detach().float() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float32))


class _BoxObjective(torch.autograd.Function):
    """:meth:`LearnedAnchors.box_objective_torch` on CPU float32 boxes by the Numba kernel: the
    gradient comes out of the same pass as the value and is only scaled in backward."""

    @staticmethod
    def forward(ctx, shapes: Tensor, box_wh: Tensor, offsets: Optional[Tensor], model: "LearnedAnchors") -> Tensor:
        wh = np.ascontiguousarray(box_wh.detach().numpy())
        use_offsets = offsets is not None
        off = (np.ascontiguousarray(offsets.detach().float().numpy()) if use_offsets
               else np.zeros((0, 0, 2), np.float32))
        value, grad = box_objective(wh, off, np.ascontiguousarray(shapes.detach().numpy()), use_offsets,
                                    model.temperature, model.recall_threshold, model.recall_sharpness,
                                    model.recall_weight, _BLOCK)
        ctx.save_for_backward(torch.from_numpy(grad).to(shapes.dtype))
        return shapes.new_tensor(value)

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None, None, None


class LearnedAnchors:
    """Anchor shapes as parameters log(w), log(h), with the objective, projection and guards above.

    Args:
        init_shapes: (L, A, 2) starting shapes (projected into the bands at once).
        strides: L strides. band: [low, high] size band in units of stride.
        lr: Adam learning rate on log sizes. temperature: softmax temperature of the smooth best IoU.
        recall_weight: weight of the soft recall term. recall_threshold: its IoU (the RPN's 0.7).
        recall_sharpness: width of the sigmoid of the soft recall, in IoU units.
        collapse_iou: anchors of a level with IoU_c above this are pushed apart (and revived above
            `duplicate_iou`).
        frozen_levels: per level, True to keep its shapes exactly as given (e.g. levels with fewer
            than A training boxes, where there is nothing to fit: Adam would still move them at full
            step size on vanishing gradients).
        seed: seeds the jitter that separates revived anchors.
    """

    def __init__(self, *, init_shapes: np.ndarray, strides: Sequence[int], band: Sequence[float] = (4.0, 16.0),
                 lr: float = 0.05, temperature: float = 0.05, recall_weight: float = 1.0,
                 recall_threshold: float = 0.7, recall_sharpness: float = 0.02, collapse_iou: float = 0.9,
                 duplicate_iou: float = 0.95, collapse_weight: float = 10.0,
                 frozen_levels: Optional[Sequence[bool]] = None, seed: int = 0) -> None:
        init = torch.as_tensor(np.asarray(init_shapes, dtype=np.float64))
        if init.dim() != 3 or init.shape[-1] != 2 or len(strides) != init.shape[0]:
            raise ValueError(f"init_shapes must be L x A x 2 with one stride per level; got {tuple(init.shape)} "
                             f"and strides {list(strides)}")
        self.strides = torch.as_tensor([float(s) for s in strides], dtype=torch.float64)
        self.band = (float(band[0]), float(band[1]))
        self.temperature = temperature
        self.recall_weight = recall_weight
        self.recall_threshold = recall_threshold
        self.recall_sharpness = recall_sharpness
        self.collapse_iou = collapse_iou
        self.duplicate_iou = duplicate_iou
        self.collapse_weight = collapse_weight
        self.generator = torch.Generator().manual_seed(int(seed))
        frozen = [False] * init.shape[0] if frozen_levels is None else [bool(f) for f in frozen_levels]
        if len(frozen) != init.shape[0]:
            raise ValueError(f"frozen_levels has {len(frozen)} entries for {init.shape[0]} levels")
        self.trainable = torch.as_tensor([not f for f in frozen])  # (L,)
        self._init = init.clone()
        self.log_wh = torch.nn.Parameter(init.clamp(min=1e-6).log())
        self.optimizer = torch.optim.Adam([self.log_wh], lr=lr)
        self.project()

    @property
    def shapes(self) -> np.ndarray:
        """float64 (L, A, 2) current (w, h); frozen levels are returned exactly as given."""
        current = torch.where(self.trainable[:, None, None], self.log_wh.detach().exp(), self._init)
        return current.numpy().copy()

    def project(self) -> None:
        """Put every anchor of a trainable level into its band (sqrt area) and h / w into [1/8, 8], in log space."""
        with torch.no_grad():
            log_size = self.log_wh.sum(dim=-1) / 2  # (L, A): log sqrt(w*h)
            log_ratio = self.log_wh[..., 1] - self.log_wh[..., 0]  # (L, A): log(h / w)
            low = (self.strides * self.band[0]).log()[:, None]  # (L, 1)
            high = (self.strides * self.band[1]).log()[:, None]
            log_size = torch.maximum(torch.minimum(log_size, high), low)
            log_ratio = log_ratio.clamp(-math.log(MAX_ASPECT), math.log(MAX_ASPECT))
            projected = torch.stack((log_size - log_ratio / 2, log_size + log_ratio / 2), dim=-1)  # (L, A, 2)
            self.log_wh.copy_(torch.where(self.trainable[:, None, None], projected, self.log_wh))

    def loss(self, box_wh: Tensor, offsets: Optional[Tensor]) -> Tensor:
        """-(smooth best IoU + weighted soft recall) + collapse penalty. box_wh (N, 2), offsets (N, L, 2) or None.

        CPU float32 boxes take the fused Numba kernel (detkit.anchors.kernels.box_objective, forward and
        gradient in one pass over the boxes); other tensors take :meth:`box_objective_torch`, its reference.
        """
        shapes = self.log_wh.exp()  # (L, A, 2) float64
        fused = box_wh.device.type == "cpu" and box_wh.dtype == torch.float32 and len(box_wh) > 0
        objective = (_BoxObjective.apply(shapes, box_wh, offsets, self) if fused
                     else self.box_objective_torch(box_wh, offsets, shapes))
        return -objective + self.collapse_weight * self._collapse_penalty(shapes)

    def box_objective_torch(self, box_wh: Tensor, offsets: Optional[Tensor], shapes: Tensor) -> Tensor:
        """mean(smooth best IoU) + recall_weight * mean(soft recall) with torch autograd. shapes (L, A, 2)."""
        iou = offset_iou(box_wh, offsets, shapes.to(box_wh.dtype)).flatten(1)  # (N, L, A) -> (N, L*A)
        # Softmax weights are constants of the step: every box pulls each anchor towards itself in
        # proportion to its weight (with the weights differentiated too, the weighted mean would
        # rise by pushing poor anchors further away, and anchors would drift off and die).
        weight = torch.softmax(iou.detach() / self.temperature, dim=1)
        smooth_best = (weight * iou).sum(dim=1)  # (N,)
        recall = torch.sigmoid((smooth_best - self.recall_threshold) / self.recall_sharpness)
        return smooth_best.mean() + self.recall_weight * recall.mean()

    def _collapse_penalty(self, shapes: Tensor) -> Tensor:
        """Sum over levels and anchor pairs of relu(IoU_c - collapse_iou)^2."""
        num_anchors = shapes.shape[1]
        upper = torch.triu(torch.ones(num_anchors, num_anchors, dtype=torch.bool), diagonal=1)
        penalty = shapes.new_zeros(())
        for level in range(shapes.shape[0]):
            pair = centred_iou(shapes[level], shapes[level])[upper]  # (A, A) -> (A*(A-1)/2,)
            penalty = penalty + (pair - self.collapse_iou).clamp(min=0).pow(2).sum()
        return penalty

    def step(self, box_wh: np.ndarray | Tensor, offsets: Optional[np.ndarray | Tensor] = None) -> float:
        """One Adam step on these boxes, then the projection. Returns the loss before the step."""
        wh, off = _as_float(box_wh).reshape(-1, 2), None if offsets is None else _as_float(offsets)
        if len(wh) == 0:
            return 0.0
        with _single_thread():
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss(wh, off)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"learned anchor loss is {loss.item()} (shapes {self.shapes.tolist()})")
            loss.backward()
            self.log_wh.grad[~self.trainable] = 0.0
            self.optimizer.step()
            self.project()
        return float(loss.detach())

    def find_bad_anchors(self, box_wh: np.ndarray | Tensor, offsets: Optional[np.ndarray | Tensor]) -> dict:
        """Dead or duplicated anchors of the trainable levels that hold at least A boxes.

        Returns:
            ``{level: (bad anchor indices, that level's box indices worst-served first)}``, levels with
            no bad anchor left out. Dead: no box's best anchor. Duplicated: the loser (fewer boxes) of a
            pair of the level with IoU_c > duplicate_iou.
        """
        wh, off = _as_float(box_wh).reshape(-1, 2), None if offsets is None else _as_float(offsets)
        if len(wh) == 0:
            return {}
        num_levels, num_anchors = self.log_wh.shape[:2]
        box_level = torch.as_tensor(assign_levels(wh.numpy(), self.strides.tolist()))
        with torch.no_grad():
            iou = offset_iou(wh, off, self.log_wh.exp().to(wh.dtype)).flatten(1)  # (N, L, A) -> (N, L*A)
        best, owner = iou.max(dim=1)  # (N,)
        wins = torch.bincount(owner, minlength=num_levels * num_anchors).view(num_levels, num_anchors)
        out = {}
        for level in range(num_levels):
            members = (box_level == level).nonzero().flatten()
            if len(members) < num_anchors or not self.trainable[level]:
                continue
            shapes = self.log_wh.detach()[level].exp()  # (A, 2)
            pair = centred_iou(shapes, shapes)  # (A, A)
            bad = {a for a in range(num_anchors) if wins[level, a] == 0}
            for i in range(num_anchors):
                for j in range(i + 1, num_anchors):
                    if pair[i, j] > self.duplicate_iou and i not in bad and j not in bad:
                        bad.add(i if wins[level, i] < wins[level, j] else j)
            if bad:
                out[level] = (sorted(bad), members[best[members].argsort()])
        return out

    def revive(self, box_wh: np.ndarray | Tensor, offsets: Optional[np.ndarray | Tensor]) -> int:
        """Move dead or duplicated anchors (see find_bad_anchors) onto their level's worst-served boxes,
        with a small seeded jitter, and reset their Adam moments. Returns the number of anchors moved."""
        wh = _as_float(box_wh).reshape(-1, 2)
        moved = 0
        with torch.no_grad():
            for level, (bad, worst) in self.find_bad_anchors(wh, offsets).items():
                for k, a in enumerate(bad):
                    target = wh[worst[k % len(worst)]].double().log()
                    jitter = 0.01 * torch.randn(2, generator=self.generator, dtype=torch.float64)
                    self.log_wh[level, a] = target + jitter
                    for state in self.optimizer.state.get(self.log_wh, {}).values():
                        if isinstance(state, Tensor) and state.shape == self.log_wh.shape:
                            state[level, a] = 0.0
                    moved += 1
        if moved:
            self.project()
        return moved

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def state_dict(self) -> dict:
        """Everything a resumed online fit needs: the log sizes, Adam's state and the revival generator."""
        # Deep copies: Adam's state_dict() holds references to its live moment tensors.
        return {"log_wh": self.log_wh.detach().clone(), "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        log_wh = torch.as_tensor(state["log_wh"], dtype=torch.float64)
        if log_wh.shape != self.log_wh.shape:
            raise ValueError(f"learned anchor state has shape {tuple(log_wh.shape)}, "
                             f"expected {tuple(self.log_wh.shape)}")
        with torch.no_grad():
            self.log_wh.copy_(log_wh)
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])


def fit_learned(box_wh: np.ndarray, strides: Sequence[int], init_shapes: np.ndarray, *,
                offsets: Optional[np.ndarray] = None, baseline_shapes: Optional[np.ndarray] = None,
                steps: int = 300, lr: float = 0.05, temperature: float = 0.05, band: Sequence[float] = (4.0, 16.0),
                revive_every: int = 50, check_every: int = 10, min_lr_factor: float = 0.05,
                seed: int = 0) -> FitResult:
    """The learned mode: full-batch Adam from `init_shapes`, revivals every `revive_every` steps and at the end.

    The learning rate follows a cosine from `lr` down to ``lr * min_lr_factor``. Every `check_every`
    steps (and at the start and the end) the iterate is scored with detkit.anchors.fit.anchor_fitness, the
    hard metrics the smooth objective stands for; the best iterate without dead or duplicated
    anchors is the candidate (so the fit never ends worse than its projected start).

    Boxes with a side under MIN_FIT_SIDE are left out; levels with fewer than A boxes (by
    detkit.anchors.fit.assign_levels) keep their initial shapes. The candidate is adopted when it improves
    (see detkit.anchors.fit.improves) over `baseline_shapes` (default: `init_shapes`), usually the manual set.

    Args:
        box_wh: (N, 2); strides: L strides; init_shapes: (L, A, 2); offsets: (N, L, 2) or None.
    """
    wh = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    keep = (wh >= MIN_FIT_SIDE).all(axis=1)
    wh = wh[keep]
    offsets = None if offsets is None else np.asarray(offsets, dtype=np.float64)[keep]
    num_anchors = np.asarray(init_shapes).shape[1]
    populated = np.bincount(assign_levels(wh, strides), minlength=len(strides)) >= num_anchors
    model = LearnedAnchors(init_shapes=init_shapes, strides=strides, band=band, lr=lr, temperature=temperature,
                           frozen_levels=(~populated).tolist(), seed=seed)
    wh_t = _as_float(wh)
    off_t = None if offsets is None else _as_float(offsets)
    fitness = anchor_fitness(wh, offsets)
    best_shapes, best_fit = None, -math.inf

    def consider() -> None:  # keep the best healthy iterate (no dead or duplicated anchor)
        nonlocal best_shapes, best_fit
        fit = fitness(model.shapes)
        if fit > best_fit and not model.find_bad_anchors(wh_t, off_t):
            best_shapes, best_fit = model.shapes, fit

    consider()
    for i in range(steps):
        model.set_lr(lr * (min_lr_factor + (1 - min_lr_factor) * 0.5 * (1 + math.cos(math.pi * i / steps))))
        model.step(wh_t, off_t)
        if revive_every > 0 and (i + 1) % revive_every == 0 and i + 1 < steps:
            model.revive(wh_t, off_t)
        if (i + 1) % check_every == 0:
            consider()
    model.revive(wh_t, off_t)
    consider()
    cand = best_shapes if best_shapes is not None else model.shapes
    start = np.asarray(init_shapes if baseline_shapes is None else baseline_shapes, dtype=np.float64)
    return decide(wh, offsets, start, cand, populated.tolist(), "learned")
