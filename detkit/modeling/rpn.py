"""Region proposal network: a shared conv head over every level, anchor targets, losses and proposals.

Shape shorthand: B images, L levels, A anchors per location, C channels, H_l/W_l the size of
level l, N anchors of one image over all levels (sum over l of H_l*W_l*A), M ground-truth boxes,
T candidates kept before NMS (sum over l of min(pre_nms_top_n, H_l*W_l*A)), R proposals.

Training (torchvision's RegionProposalNetwork, leaner): anchors -> MaxIoUAssigner (ignore regions
honoured) -> BalancedSampler (a torch.Generator owned by the module) -> BoxCoder.encode of the
sampled positives only -> binary cross-entropy over the sampled anchors and smooth-L1 (beta 1/9)
over the positives, both divided by the number of sampled anchors of the batch, as torchvision.
Proposals: top-k logits per level first (detkit.ops.topk_stable: equal logits by increasing
anchor index), then decoding of those k anchors only (torchvision decodes every anchor, then
selects: same boxes), clip, drop boxes under min_size, score threshold, NMS within each level at
every size (detkit.ops.batched_nms with the level as the class, mode "per_group"), top
post_nms_top_n. Every ranking follows detkit.ops.score_order's rule (equal scores by increasing
index), as the exported graph's (detkit.deploy.export_graph) does, so that both pick the same
proposals when scores tie.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms as tv_batched_nms

from detkit.modeling.geometry_dtype import geometry_dtype, to_geometry
from detkit.modeling.sampler import SamplingRNG
from detkit.ops.boxes import clip_boxes
from detkit.ops.nms import batched_nms
from detkit.ops.score_order import topk_stable

if TYPE_CHECKING:  # only for annotations: the components are passed in by build_detector
    from detkit.modeling.anchors import AnchorGenerator
    from detkit.modeling.assigner import MaxIoUAssigner
    from detkit.modeling.codec import BoxCoder
    from detkit.modeling.sampler import BalancedSampler

__all__ = ["RPNHead", "RegionProposalNetwork", "flatten_head_outputs"]


class RPNHead(nn.Module):
    """``num_convs`` x (3x3 conv + ReLU), then 1x1 convs to A objectness logits and 4A deltas; shared by
    every level.

    ``num_convs = 1`` is torchvision's RPNHead; ``num_convs = 2`` its ``RPNHead(conv_depth=2)`` of
    ``fasterrcnn_resnet50_fpn_v2``. The first conv is ``conv`` (torchvision's ``conv.0.0``), the
    further ones ``extra_convs.{k}`` (torchvision's ``conv.{k + 1}.0``); no norm, as torchvision.
    Initialised as torchvision's RPNHead: weights normal(std=0.01), biases 0.
    """

    def __init__(self, *, in_channels: int, num_anchors: int, num_convs: int = 1) -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"RPNHead num_convs must be >= 1, got {num_convs}")
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
        # Empty for one conv: an empty ModuleList adds no state-dict keys.
        self.extra_convs = nn.ModuleList(nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1)
                                         for _ in range(num_convs - 1))
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for layer in (self.conv, *self.extra_convs, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.constant_(layer.bias, 0.0)

    def forward(self, features: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """features: L x Tensor[B, C, H_l, W_l] -> (L x Tensor[B, A, H_l, W_l], L x Tensor[B, 4A, H_l, W_l])."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            for conv in self.extra_convs:
                t = F.relu(conv(t))
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def flatten_head_outputs(logits: Sequence[Tensor], deltas: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
    """Per-level head outputs -> Tensor[B, N] logits and Tensor[B, N, 4] deltas in anchor order
    (level, then row-major position, then anchor shape: the AnchorGenerator's order)."""
    flat_logits, flat_deltas = [], []
    for lg, dl in zip(logits, deltas):
        b, a, h, w = lg.shape
        flat_logits.append(lg.permute(0, 2, 3, 1).reshape(b, h * w * a))  # (B, A, H, W) -> (B, H*W*A)
        # (B, A*4, H, W) -> (B, A, 4, H, W) -> (B, H, W, A, 4) -> (B, H*W*A, 4)
        flat_deltas.append(dl.view(b, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, h * w * a, 4))
    return torch.cat(flat_logits, dim=1), torch.cat(flat_deltas, dim=1)


class RegionProposalNetwork(nn.Module):
    """Anchors + RPNHead -> proposals per image, and the two RPN losses when targets are given.

    Args:
        anchor_generator: AnchorGenerator with one level per feature map.
        head: RPNHead (A = anchor_generator.num_anchors_per_location).
        assigner: MaxIoUAssigner (torchvision: 0.7 / 0.3, low-quality matches on).
        sampler: BalancedSampler (torchvision: 256 per image, 0.5 positive).
        box_coder: BoxCoder (weights (1, 1, 1, 1), clamp log(1000/16)).
        pre_nms_top_n / post_nms_top_n: (train, test) counts (per level before NMS; per image after).
        nms_thresh: IoU threshold of the per-level NMS. score_thresh: minimum sigmoid objectness.
        min_size: proposals narrower or lower than this (input pixels) are dropped.
        smooth_l1_beta: beta of the regression loss (torchvision 1/9).
        seed: seed of the sampling generator.
    """

    def __init__(self, *, anchor_generator: "AnchorGenerator", head: RPNHead, assigner: "MaxIoUAssigner",
                 sampler: "BalancedSampler", box_coder: "BoxCoder", pre_nms_top_n: Tuple[int, int],
                 post_nms_top_n: Tuple[int, int], nms_thresh: float, score_thresh: float = 0.0,
                 min_size: float = 1e-3, smooth_l1_beta: float = 1.0 / 9, seed: int = 0,
                 kernels: str = "detkit") -> None:
        super().__init__()
        if kernels not in ("detkit", "torchvision"):
            raise ValueError(f"kernels must be 'detkit' or 'torchvision', got {kernels!r}")
        self.kernels = kernels
        self.anchor_generator = anchor_generator
        self.head = head
        self.assigner = assigner
        self.sampler = sampler
        self.box_coder = box_coder
        self.pre_nms_top_n = tuple(pre_nms_top_n)
        self.post_nms_top_n = tuple(post_nms_top_n)
        self.nms_thresh = float(nms_thresh)
        self.score_thresh = float(score_thresh)
        self.min_size = float(min_size)
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.rng = SamplingRNG(seed)
        self._anchor_key: Optional[tuple] = None
        self._anchors: Optional[Tuple[Tensor, List[int]]] = None

    def anchors(self, feature_sizes: Sequence[Tuple[int, int]], dtype: torch.dtype,
                device: torch.device) -> Tuple[Tensor, List[int]]:
        """All anchors of one image over every level, Tensor[N, 4], and the count per level (cached)."""
        key = (tuple(feature_sizes), dtype, device)
        if key != self._anchor_key:
            per_level = self.anchor_generator(feature_sizes, dtype=dtype, device=device)
            self._anchors = (torch.cat(per_level, dim=0), [int(a.shape[0]) for a in per_level])
            self._anchor_key = key
        return self._anchors

    def forward(self, features: Sequence[Tensor], image_sizes: Sequence[Tuple[int, int]],
                targets: Optional[Sequence[Dict[str, Tensor]]] = None) -> Tuple[List[Tensor], Dict[str, Tensor]]:
        """
        Args:
            features: L x Tensor[B, C, H_l, W_l], finest first.
            image_sizes: B x (h, w), the unpadded size of each image (proposals are clipped to it).
            targets: B dicts with "boxes" Tensor[M, 4] and optionally "ignore_boxes" Tensor[K, 4];
                required in training; in eval mode they only add the losses (validation loss).
        Returns:
            (B x Tensor[R, 4] proposals sorted by decreasing objectness within each level's NMS output,
             {"loss_rpn_cls", "loss_rpn_reg"} when targets are given, else {}).
        """
        if self.training and targets is None:
            raise ValueError("RegionProposalNetwork needs targets in training mode")
        logits, deltas = self.head(features)
        feature_sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        # Anchors, decoding, the top-k and the losses in float32 even under autocast (detkit.modeling.geometry_dtype).
        anchors, num_per_level = self.anchors(feature_sizes, geometry_dtype(features[0].dtype), features[0].device)
        logits, deltas = flatten_head_outputs(logits, deltas)  # (B, N), (B, N, 4)
        logits, deltas = to_geometry(logits), to_geometry(deltas)
        with torch.no_grad():
            proposals = self.propose(logits.detach(), deltas.detach(), anchors, num_per_level, image_sizes)
        losses: Dict[str, Tensor] = {}
        if targets is not None:
            device = logits.device  # sampling draws on the model's device (no index crosses to the host)
            generator = self.rng.on(device) if self.training else self.rng.fresh(device)
            losses = self.loss(logits, deltas, anchors, targets, generator)
        return proposals, losses

    # ------------------------------------------------------------------ proposals
    def propose(self, logits: Tensor, deltas: Tensor, anchors: Tensor, num_per_level: Sequence[int],
                image_sizes: Sequence[Tuple[int, int]]) -> List[Tensor]:
        """logits: Tensor[B, N], deltas: Tensor[B, N, 4], anchors: Tensor[N, 4] -> B x Tensor[R, 4]."""
        mode = 0 if self.training else 1
        pre_n, post_n = self.pre_nms_top_n[mode], self.post_nms_top_n[mode]
        top_idx, level_ids, start = [], [], 0
        for level, n in enumerate(num_per_level):
            k = min(pre_n, n)
            # equal logits (a sigmoid's saturation, ReLU-dead regions, bf16) by increasing anchor index, as
            # the exported graph's TopK (detkit.ops.score_order); torch.topk's choice among them is arbitrary
            level_logits = logits[:, start:start + n]
            top = level_logits.topk(k, dim=1)[1] if self.kernels == "torchvision" else topk_stable(level_logits, k)[1]
            top_idx.append(top + start)  # (B, k)
            level_ids.append(torch.full((k,), level, dtype=torch.int64, device=logits.device))
            start += n
        top_idx = torch.cat(top_idx, dim=1)  # (B, T)
        level_ids = torch.cat(level_ids)  # (T,)
        num_images, num_top = top_idx.shape
        top_scores = torch.gather(logits, 1, top_idx).sigmoid()  # (B, T)
        top_deltas = torch.gather(deltas, 1, top_idx[..., None].expand(-1, -1, 4))  # (B, T, 4)
        boxes = self.box_coder.decode(top_deltas.reshape(-1, 4),  # (B, T, 4) -> (B*T, 4)
                                      anchors[top_idx.reshape(-1)])  # (B, T) -> (B*T,) -> (B*T, 4)
        boxes = boxes.view(num_images, num_top, 4)  # (B*T, 4) -> (B, T, 4)
        proposals = []
        for i in range(num_images):
            b = clip_boxes(boxes[i], image_sizes[i])
            s, lv = top_scores[i], level_ids
            # One mask, so one host synchronisation (the torch.where) per image: boxes under min_size
            # (remove_small_boxes' test; a NaN coordinate, which clipping leaves as it is, fails it),
            # non-finite scores of a diverged model (left to the loss, not to NMS), and torchvision's
            # score threshold (scores >= score_thresh).
            valid = (b[:, 2] - b[:, 0] >= self.min_size) & (b[:, 3] - b[:, 1] >= self.min_size) & torch.isfinite(s)
            if self.score_thresh > 0:
                valid &= s >= self.score_thresh
            keep = torch.where(valid)[0]
            b, s, lv = b[keep], s[keep], lv[keep]
            # NMS within each level at every size (torchvision switches to the offset trick under 1000
            # boxes; the exported graph cannot switch), kept boxes by decreasing score, ties by index
            if self.kernels == "torchvision":  # torchvision's own call, its order of equal scores included
                keep = tv_batched_nms(b, s, lv, self.nms_thresh)[:post_n]
            else:
                keep = batched_nms(b, s, lv, self.nms_thresh, mode="per_group")[:post_n]
            proposals.append(b[keep])
        return proposals

    # ------------------------------------------------------------------ training targets and losses
    def assign(self, anchors: Tensor, gt_boxes: Tensor,
               gt_ignore: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """anchors: Tensor[N, 4], gt_boxes: Tensor[M, 4], gt_ignore: Tensor[K, 4] | None ->
        (matched_idxs int64[N], labels int8[N] in {-1 ignore, 0 negative, 1 positive})."""
        return self.assigner.assign(anchors, gt_boxes, gt_ignore)

    def loss(self, logits: Tensor, deltas: Tensor, anchors: Tensor, targets: Sequence[Dict[str, Tensor]],
             generator: torch.Generator) -> Dict[str, Tensor]:
        """logits: Tensor[B, N], deltas: Tensor[B, N, 4], anchors: Tensor[N, 4] -> loss_rpn_cls, loss_rpn_reg.

        Both losses are sums divided by the number of sampled anchors in the batch (torchvision's
        normalisation: BCE mean over the sampled anchors, smooth-L1 sum / sampled count).
        """
        num_anchors = anchors.shape[0]
        pos_rows, neg_rows, reg_targets = [], [], []
        for i, target in enumerate(targets):
            gt_boxes = target["boxes"].to(anchors)
            ignore = target.get("ignore_boxes")
            matched, labels = self.assign(anchors, gt_boxes, None if ignore is None else ignore.to(anchors))
            pos, neg = self.sampler.sample(labels, generator=self.rng.for_image(target, generator))
            pos_rows.append(pos + i * num_anchors)
            neg_rows.append(neg + i * num_anchors)
            if pos.numel() > 0:
                reg_targets.append(self.box_coder.encode(gt_boxes[matched[pos]], anchors[pos]))
        pos_rows = torch.cat(pos_rows).to(logits.device)
        neg_rows = torch.cat(neg_rows).to(logits.device)
        num_sampled = max(pos_rows.numel() + neg_rows.numel(), 1)
        flat_logits = logits.reshape(-1)  # (B, N) -> (B*N,)
        sampled_logits = torch.cat((flat_logits[pos_rows], flat_logits[neg_rows]))
        sampled_labels = torch.zeros_like(sampled_logits)
        sampled_labels[: pos_rows.numel()] = 1.0
        loss_cls = F.binary_cross_entropy_with_logits(sampled_logits, sampled_labels, reduction="sum") / num_sampled
        if reg_targets:
            pred = deltas.reshape(-1, 4)[pos_rows]  # (B, N, 4) -> (B*N, 4) -> (P, 4)
            loss_reg = F.smooth_l1_loss(pred, torch.cat(reg_targets), beta=self.smooth_l1_beta,
                                        reduction="sum") / num_sampled
        else:
            loss_reg = deltas.sum() * 0.0  # keeps the graph (and DDP's parameter usage) intact
        return {"loss_rpn_cls": loss_cls, "loss_rpn_reg": loss_reg}
