"""Class-aware weight transfer: start a detector from another detector's weights.

    report = transfer_weights(model, state, source_classes=["person", "dog"],
                              target_classes=["dog", "raccoon"], class_map={}, source="coco.pt")
    print(report.text())   # transferred 148/150 tensors from coco.pt; classes from the checkpoint: dog; new: raccoon

Every tensor of the same name and shape is copied. The box predictor is copied per class:

    roi_head.predictor.cls_score.weight / bias   rows: background, then one per class (K + 1)
    roi_head.predictor.bbox_pred.weight / bias   4 rows per class (4K), or 4 when class-agnostic

The background row always; the rows of each class of the data whose name (case-insensitive, trimmed,
after ``model.class_map``) is a class of the weights, from that class's rows; every other class keeps
its fresh initialisation. A backbone tensor (body or FPN) of another shape is an error: a backbone
that half loads is a model of another architecture. A head tensor (``rpn.*``, ``roi_head.*``) of
another shape starts fresh and is reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from detkit.atomic_io import write_json_atomic
from detkit.errors import CheckpointError, ConfigError

__all__ = ["TransferReport", "transfer_weights", "write_transfer_report", "PREDICTOR_KEYS", "normalise_class_name",
           "is_predictor_key"]

CLS_SCORE = "roi_head.predictor.cls_score"
BBOX_PRED = "roi_head.predictor.bbox_pred"
PREDICTOR_KEYS = tuple(f"{layer}.{kind}" for layer in (CLS_SCORE, BBOX_PRED) for kind in ("weight", "bias"))
BACKBONE_PREFIX = "backbone."
# The predictor tensors of a head's stages (Cascade R-CNN: roi_head.stages.{t}.predictor.*), whose rows are
# per class too.
_PREDICTOR_SUFFIXES = tuple(key[len("roi_head."):] for key in PREDICTOR_KEYS)


def is_predictor_key(key: str) -> bool:
    """Whether ``key`` is a box predictor tensor (rows per class): the head's, or one of its stages'."""
    return key in PREDICTOR_KEYS or (key.startswith("roi_head.stages.") and key.endswith(_PREDICTOR_SUFFIXES))
# Placeholder names in torchvision's COCO category list (the ids COCO skips): never a class to match.
_PLACEHOLDERS = {"n/a", "__background__"}
_NAMED = 3  # tensors named per detail line; the rest are counted


def normalise_class_name(name: str) -> str:
    """How class names are compared: case-insensitive, surrounding whitespace trimmed."""
    return str(name).strip().casefold()


@dataclass
class TransferReport:
    """What :func:`transfer_weights` did. Tensors are named by their key in the model's state dict.

    transferred: every tensor that took values from the weights (the predictor's included: ``partial``
    lists those copied row by row); fresh: ``(name, weights shape, model shape)`` of head tensors of
    another shape, kept at their initialisation; missing: model tensors the weights lack; unexpected:
    weights tensors the model lacks. classes_matched: data class -> weights class whose rows it took;
    classes_new: data classes that start fresh; class_matching: "names", "position" or "none".
    """

    source: str
    total: int
    transferred: List[str] = field(default_factory=list)
    partial: List[str] = field(default_factory=list)
    fresh: List[Tuple[str, List[int], List[int]]] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    classes_matched: Dict[str, str] = field(default_factory=dict)
    classes_new: List[str] = field(default_factory=list)
    class_matching: str = "names"
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        """The one report line."""
        line = f"transferred {len(self.transferred)}/{self.total} tensors from {self.source}"
        if self.class_matching == "names":
            matched = [t if t == s else f"{t} (as {s})" for t, s in self.classes_matched.items()]
            line += f"; classes from the checkpoint: {_names(matched) or 'none'}"
        elif self.class_matching == "position":
            line += f"; classes by position (the weights name none): {len(self.classes_matched)}"
        else:
            line += "; no class rows transferred"
        if self.classes_new:
            line += f"; new: {_names(self.classes_new)}"
        return line

    def details(self) -> List[str]:
        """The lines under the summary: notes, then fresh, missing and unexpected tensors (a few named)."""
        lines = [f"  {note}" for note in self.notes]
        if self.fresh:
            lines.append(f"  another shape, started fresh [{len(self.fresh)}]: " + _examples(
                [f"{k} {tuple(a)} in the weights vs {tuple(b)}" for k, a, b in self.fresh]))
        if self.missing:
            lines.append(f"  missing in the weights, kept at init [{len(self.missing)}]: {_examples(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected in the weights, ignored [{len(self.unexpected)}]: "
                         f"{_examples(self.unexpected)}")
        return lines

    def text(self) -> str:
        return "\n".join([self.summary(), *self.details()])

    def to_dict(self) -> dict:
        """transfer.json's content: every field, the counts and the summary line."""
        data = dataclasses.asdict(self)
        data["fresh"] = [{"name": k, "weights_shape": list(a), "model_shape": list(b)} for k, a, b in self.fresh]
        data["counts"] = {"total": self.total, "transferred": len(self.transferred), "partial": len(self.partial),
                          "fresh": len(self.fresh), "missing": len(self.missing),
                          "unexpected": len(self.unexpected)}
        data["summary"] = self.summary()
        return data


def _names(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _examples(items: Sequence[str]) -> str:
    return ", ".join(items[:_NAMED]) + (f" and {len(items) - _NAMED} more" if len(items) > _NAMED else "")


def write_transfer_report(report: TransferReport, path: str) -> None:
    """Write ``report`` as JSON to ``path`` atomically (a run folder's transfer.json)."""
    write_json_atomic(report.to_dict(), path)


# --------------------------------------------------------------------------- class matching
def match_classes(source_classes: Optional[Sequence[str]], target_classes: Sequence[str],
                  class_map: Optional[Mapping[str, str]] = None) -> Tuple[List[Tuple[int, int]], str, List[str]]:
    """Pairs (data class index, weights class index), 0-based, the matching used and notes.

    With ``source_classes`` None: by position when the counts are equal (``num_source`` is then taken
    from ``len(target_classes)`` by the caller), else nothing.

    Raises:
        ConfigError: a ``model.class_map`` entry names no class of the data, or no class of the weights.
    """
    class_map = dict(class_map or {})
    if source_classes is None:
        return [], "none", []  # the caller decides on position matching (it knows the row count)
    index = {}
    for i, name in enumerate(source_classes):
        key = normalise_class_name(name)
        if key not in _PLACEHOLDERS:
            index.setdefault(key, i)
    targets = {normalise_class_name(t) for t in target_classes}
    mapped = {}
    for data_name, weights_name in class_map.items():
        if normalise_class_name(data_name) not in targets:
            raise ConfigError(f"key 'model.class_map': '{data_name}' is no class of the data (classes: "
                              f"{_names(list(target_classes))})")
        if normalise_class_name(weights_name) not in index:
            named = [s for s in source_classes if normalise_class_name(s) not in _PLACEHOLDERS]
            raise ConfigError(f"key 'model.class_map': '{data_name}: {weights_name}' names no class of the weights "
                              f"(classes: {_names(named, 20)})")
        mapped[normalise_class_name(data_name)] = normalise_class_name(weights_name)
    pairs = []
    for t, name in enumerate(target_classes):
        key = normalise_class_name(name)
        s = index.get(mapped.get(key, key))
        if s is not None:
            pairs.append((t, s))
    notes = [f"model.class_map: {k} -> {v}" for k, v in class_map.items()]
    return pairs, "names", notes


# --------------------------------------------------------------------------- the transfer
def _shape(t: torch.Tensor) -> List[int]:
    return list(t.shape)


def transfer_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], *,
                     source_classes: Optional[Sequence[str]], target_classes: Sequence[str],
                     class_map: Optional[Mapping[str, str]] = None, source: str = "the weights") -> TransferReport:
    """Load what fits of ``state`` (a detkit-layout Detector state dict) into ``model``; see the module doc.

    Args:
        source_classes: the weights' class names (label i -> source_classes[i-1]); None when unknown
            (then classes match by position if the counts are equal, else none).
        target_classes: the run's class names, in the model's label order.
        class_map: data class name -> weights class name (``model.class_map``).
        source: how the report names the weights.
    Raises:
        CheckpointError: a backbone tensor has another shape (all such tensors named, with both shapes).
        ConfigError: a ``class_map`` entry names no class of the data or of the weights.
    """
    own = model.state_dict()
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    new_state = {k: v.detach().clone() for k, v in own.items()}
    report = TransferReport(source=source, total=len(own))

    def ignorable(key: str) -> bool:  # FrozenBatchNorm2d has no num_batches_tracked: nothing of value
        return key.endswith("num_batches_tracked")

    report.missing = [k for k in own if k not in state and not ignorable(k)]
    report.unexpected = [k for k in state if k not in own and not ignorable(k)]
    backbone_mismatch = [(k, _shape(state[k]), _shape(own[k])) for k in own
                         if k.startswith(BACKBONE_PREFIX) and k in state and torch.is_tensor(state[k])
                         and state[k].shape != own[k].shape]
    if backbone_mismatch:
        shown = "; ".join(f"{k}: {tuple(a)} in the weights vs {tuple(b)} in the model"
                          for k, a, b in backbone_mismatch[:_NAMED])
        more = f" (and {len(backbone_mismatch) - _NAMED} more)" if len(backbone_mismatch) > _NAMED else ""
        raise CheckpointError(f"{source}: {len(backbone_mismatch)} backbone tensor(s) of another shape: {shown}{more}; "
                              f"the weights are of another backbone (model.backbone.depth, features, fpn_channels?)")

    for key, value in own.items():
        if is_predictor_key(key) or key not in state:
            continue
        if state[key].shape == value.shape:
            new_state[key].copy_(state[key])
            report.transferred.append(key)
        else:
            report.fresh.append((key, _shape(state[key]), _shape(value)))

    predictor = getattr(getattr(model, "roi_head", None), "predictor", None)
    _transfer_predictor(own, state, new_state, report, source_classes, list(target_classes), class_map,
                        target_agnostic=getattr(predictor, "class_agnostic", None))
    model.load_state_dict(new_state)
    order = {k: i for i, k in enumerate(own)}
    report.transferred.sort(key=order.__getitem__)
    report.fresh.sort(key=lambda item: order[item[0]])
    return report


def _transfer_predictor(own, state, new_state, report: TransferReport, source_classes, target_classes,
                        class_map, *, target_agnostic: Optional[bool]) -> None:
    keys = [k for k in own if is_predictor_key(k) and k in state]
    num_target = len(target_classes)
    class_rows = [k for k in state if is_predictor_key(k) and ".cls_score." in k]
    num_source = state[class_rows[0]].shape[0] - 1 if class_rows else None
    if source_classes is not None and num_source is not None and len(source_classes) != num_source:
        raise CheckpointError(f"{report.source}: the weights name {len(source_classes)} classes but their box "
                              f"predictor has {num_source} class rows")

    pairs, matching, notes = match_classes(source_classes, target_classes, class_map)
    report.notes.extend(notes)
    if source_classes is None:
        if num_source is None:
            pass  # no predictor in the weights: its tensors are listed as missing
        elif num_source == num_target:
            pairs, matching = [(i, i) for i in range(num_target)], "position"
            report.notes.append(f"the weights name no classes: their {num_source} classes are taken as the data's, "
                                f"in order")
        else:
            report.notes.append(f"the weights name no classes and have {num_source} of them, the data "
                                f"{num_target}: no class rows transferred (background only)")
    report.class_matching = matching
    report.classes_matched = {target_classes[t]: (source_classes[s] if source_classes else target_classes[t])
                              for t, s in pairs}
    report.classes_new = [name for t, name in enumerate(target_classes) if t not in {p[0] for p in pairs}]
    if target_agnostic is None and f"{BBOX_PRED}.weight" in own:
        target_agnostic = own[f"{BBOX_PRED}.weight"].shape[0] == 4 and num_target != 1

    for key in keys:
        src, dst = state[key], new_state[key]
        if src.shape[1:] != dst.shape[1:]:  # another feature size: nothing to copy row by row
            report.fresh.append((key, _shape(src), _shape(dst)))
            continue
        # A cascade stage's box deltas are class-agnostic when they have 4 rows (and more than one class).
        key_agnostic = target_agnostic if key in PREDICTOR_KEYS else (dst.shape[0] == 4 and num_target != 1)
        source_agnostic = src.shape[0] == 4 and num_source != 1
        if ".cls_score." in key:
            rows = [(0, 0)] + [(1 + t, 1 + s) for t, s in pairs]
        elif key_agnostic:
            if not source_agnostic:  # per-class box deltas have no class-agnostic counterpart
                report.fresh.append((key, _shape(src), _shape(dst)))
                continue
            rows = [(i, i) for i in range(4)]
        elif source_agnostic:  # the weights' shared deltas start every matched class
            rows = [(4 * t + i, i) for t, _ in pairs for i in range(4)]
        else:
            rows = [(4 * t + i, 4 * s + i) for t, s in pairs for i in range(4)]
        if any(r >= src.shape[0] for _, r in rows):
            report.fresh.append((key, _shape(src), _shape(dst)))
            continue
        if rows:
            to_rows = torch.tensor([r for r, _ in rows])
            from_rows = torch.tensor([r for _, r in rows])
            dst[to_rows] = src[from_rows].to(dst.dtype)
            report.transferred.append(key)
            report.partial.append(key)
