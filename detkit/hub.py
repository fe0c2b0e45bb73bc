"""Pretrained weights by torchvision name, from torch hub's cache, read safely.

A weights setting (``model.backbone.weights``) is either a local file or a torchvision weights name::

    torchvision:<Enum>.<MEMBER>      e.g. torchvision:ResNet50_Weights.IMAGENET1K_V2,
                                          torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
                                          torchvision:ResNet50_Weights.DEFAULT

in torchvision's own spelling: every ``WeightsEnum`` that ``torchvision.models`` lists resolves (through
``get_model_weights`` / ``get_weight``). The file lives where torchvision's own
``load_state_dict_from_url`` puts it, ``<torch.hub.get_dir()>/checkpoints/<basename of the URL>``
(``$TORCH_HOME/hub/checkpoints/...``): a file found there is used as is; otherwise it is downloaded
there with torch.hub's downloader and the same hash check (the hash prefix in the file name). Offline,
the error says in one line which URL to fetch on a connected machine and the exact path to put it at.
Under torch.distributed (initialised, world size > 1) only rank 0 downloads; the others wait on a
barrier, then every rank reads the file.

:func:`read_state_dict` reads a weights file with the weights-only loader (no code runs) and returns
its state dict, whatever torchvision or detkit wrapper it came in.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional
from urllib.parse import urlparse

import torch
import torch.distributed as dist
import torch.hub

from detkit.errors import CheckpointError, ConfigError
from detkit.safe_load import load_torch_file

__all__ = ["PREFIX", "ResolvedWeights", "resolve_weights", "weights_name_for_file", "read_state_dict",
           "cache_path"]

PREFIX = "torchvision:"
# The entries of a saved dict that hold the state dict itself, tried in this order: a detkit checkpoint
# ("model"), the usual training-script wrappers ("state_dict", "model_state_dict").
STATE_DICT_ENTRIES = ("model", "state_dict", "model_state_dict")
_HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX: the sha256 prefix in a file name
# '<Enum>.<MEMBER>' as torchvision spells it (ResNet50_Weights, ResNet50_QuantizedWeights), in any case.
_ENUM_LIKE = re.compile(r"^\w+_\w*weights\.\w+$", re.IGNORECASE)
_FILE_SUFFIXES = {"pth", "pt", "pkl", "bin", "ckpt", "tar", "safetensors", "zip", "onnx", "npz"}


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights setting resolved to a local file.

    Attributes:
        path: the local file to read.
        name: the torchvision weights name (``"ResNet50_Weights.IMAGENET1K_V2"``; ``DEFAULT`` resolved to
            the member it stands for), or None for a plain path.
        categories: torchvision's ``meta["categories"]`` of those weights (class names, index 0 the
            background for detectors), or None.
        url: where torchvision downloads the file from, or None for a plain path.
    """

    path: str
    name: Optional[str] = None
    categories: Optional[List[str]] = None
    url: Optional[str] = None


# --------------------------------------------------------------------------- torchvision's names
@functools.lru_cache(maxsize=1)
def _catalog() -> Dict[str, object]:
    """Every ``<Enum>.<MEMBER>`` (aliases such as DEFAULT included) of every model torchvision lists."""
    from torchvision.models import get_model_weights, list_models

    names: Dict[str, object] = {}
    for model in list_models():
        try:
            enum = get_model_weights(model)
        except ValueError:  # a builder without a typed weights argument
            continue
        for member_name, member in enum.__members__.items():
            names.setdefault(f"{enum.__name__}.{member_name}", member)
    return names


def _lookup(name: str):
    """The WeightsEnum member called ``name`` (``<Enum>.<MEMBER>``), or None."""
    member = _catalog().get(name)
    if member is not None:
        return member
    from torchvision.models import get_weight

    try:  # an enum torchvision has but does not list under a model
        return get_weight(name)
    except (ValueError, KeyError):
        return None


def _nearest(name: str, count: int = 3) -> List[str]:
    """The valid names nearest to ``name`` (case-insensitive), closest first."""
    lowered: Dict[str, str] = {}
    for valid in _catalog():
        lowered.setdefault(valid.lower(), valid)
    query = name.lower()
    if query in lowered:
        return [lowered[query]]
    enum, _, member = query.partition(".")
    close = difflib.get_close_matches(query, list(lowered), n=count, cutoff=0.6)
    if not close and member:  # the enum is right (or close) but the member is far: list its members
        enums = difflib.get_close_matches(enum, sorted({k.partition(".")[0] for k in lowered}), n=1, cutoff=0.8)
        close = [k for k in lowered if enums and k.partition(".")[0] == enums[0]][:count + 2]
    return [lowered[k] for k in close]


def _suggestion(name: str) -> str:
    near = _nearest(name)
    if not near:
        return ("no torchvision weights name is close; torchvision's names are '<Enum>.<MEMBER>' as in "
                "torchvision.models, e.g. torchvision:ResNet50_Weights.IMAGENET1K_V2")
    return "did you mean " + " or ".join(f"'{PREFIX}{n}'" for n in near) + "?"


def cache_path(url: str) -> str:
    """Where torchvision's ``load_state_dict_from_url`` keeps ``url``: torch hub's checkpoints folder."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(url).path))


@functools.lru_cache(maxsize=1)
def _names_by_file() -> Dict[str, str]:
    names: Dict[str, str] = {}
    for name, member in _catalog().items():
        if member.name == name.partition(".")[2]:  # skip aliases (DEFAULT): the real member names the file
            names.setdefault(os.path.basename(urlparse(member.url).path), name)
    return names


def weights_name_for_file(path: str) -> Optional[str]:
    """The torchvision weights name whose URL has the basename of ``path`` (e.g.
    ``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth`` -> ``"FasterRCNN_ResNet50_FPN_Weights.COCO_V1"``), so a
    caller can look up its categories; None when no torchvision weights file is called so."""
    return _names_by_file().get(os.path.basename(os.fspath(path)))


# --------------------------------------------------------------------------- resolving a setting
def resolve_weights(spec: str, *, key: str, log: Callable[[str], None] = print) -> ResolvedWeights:
    """Resolve a weights setting (``key`` names it in messages, e.g. ``"model.backbone.weights"``).

    Args:
        spec: a local path (returned as is once it exists), or ``torchvision:<Enum>.<MEMBER>``.
        key: the setting's name, the first word of every error.
        log: where the download message goes.
    Raises:
        CheckpointError: the local file does not exist (with a hint when ``spec`` looks like a misspelt
            torchvision name), or the named weights are not cached and cannot be downloaded.
        ConfigError: ``torchvision:<name>`` names no torchvision weights (the nearest names suggested).
    """
    spec = os.fspath(spec)
    if spec.startswith(PREFIX):
        return _resolve_name(spec[len(PREFIX):].strip(), key=key, log=log)
    if not os.path.exists(spec):
        raise CheckpointError(f"{key}: '{spec}' does not exist{_looks_like_a_name(spec)}")
    return ResolvedWeights(path=spec)


def _looks_like_a_name(spec: str) -> str:
    """A hint, when a missing path looks like a torchvision weights name (another prefix, or none)."""
    rest = re.sub(r"^(torchvision|tv)\s*(::?|\.|/)\s*", "", spec, flags=re.IGNORECASE)
    if rest == spec:
        rest = re.sub(r"^[A-Za-z][\w.-]+::?", "", spec)  # any other 'prefix:' (one letter is a drive)
    if not _ENUM_LIKE.match(rest) or rest.rpartition(".")[2].lower() in _FILE_SUFFIXES:
        return ""
    if _lookup(rest) is not None:
        return f"; to use torchvision's weights write '{PREFIX}{rest}'"
    return f"; if this is a torchvision weights name, write it as '{PREFIX}<Enum>.<MEMBER>': {_suggestion(rest)}"


def _resolve_name(name: str, *, key: str, log: Callable[[str], None]) -> ResolvedWeights:
    member = _lookup(name) if name.count(".") == 1 else None
    if member is None:
        raise ConfigError(f"{key}: '{PREFIX}{name}' is not a torchvision weights name; {_suggestion(name)}")
    full = f"{type(member).__name__}.{member.name}"
    url = member.url
    path = cache_path(url)
    categories = member.meta.get("categories")
    resolved = ResolvedWeights(path=path, name=full, categories=list(categories) if categories else None, url=url)
    _ensure_cached(resolved, spec=f"{PREFIX}{name}", key=key, log=log)
    return resolved


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _download(url: str, path: str, log: Callable[[str], None]) -> None:
    """torch.hub's download (to a temporary file, then renamed) with torchvision's hash check."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    match = _HASH_REGEX.search(os.path.basename(path))
    log(f"downloading {url} to {path}")
    torch.hub.download_url_to_file(url, path, hash_prefix=match.group(1) if match else None, progress=False)


def _ensure_cached(resolved: ResolvedWeights, *, spec: str, key: str, log: Callable[[str], None]) -> None:
    """Download ``resolved.url`` to ``resolved.path`` unless it is there (rank 0 only, under
    torch.distributed), or raise the one-line error that says where to put it."""
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    downloads = not distributed or dist.get_rank() == 0
    failure: Optional[str] = None
    if downloads and not os.path.isfile(resolved.path):
        try:
            _download(resolved.url, resolved.path, log)
        except Exception as exc:  # URLError offline, HTTPError, a hash mismatch (RuntimeError), OSError
            failure = _one_line(exc)
    if distributed:  # rank 0 never raises before the barrier, or the others would wait forever
        dist.barrier()
    if failure is None and not os.path.isfile(resolved.path):
        failure = "rank 0 did not download it where this rank can read it: see rank 0's error"
    if failure is not None:
        raise CheckpointError(f"{key}: {spec} is not in torch hub's cache and could not be downloaded ({failure}); "
                              f"on a connected machine download {resolved.url} and put it at {resolved.path}")


# --------------------------------------------------------------------------- reading a state dict
def _is_state_dict(obj) -> bool:
    return (isinstance(obj, dict) and bool(obj)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def read_state_dict(path: str, *, key: str) -> Dict[str, torch.Tensor]:
    """The state dict in the weights file ``path``, read weights-only (no code in the file runs).

    The file holds either the state dict itself (a dict of str -> Tensor, as ``torch.save(model.
    state_dict())`` and every torchvision weights file), or a dict whose ``"model"`` (a detkit checkpoint),
    ``"state_dict"`` or ``"model_state_dict"`` entry (tried in that order) is one; that entry is returned
    as is, whatever else the dict holds. When every key starts with ``"module."`` (saved from a
    DistributedDataParallel wrapper) the prefix is stripped.

    Raises:
        CheckpointError: naming ``key`` and ``path``: the file is missing, unreadable, holds pickled
            objects (which weights-only loading refuses), or holds no state dict.
    """
    path = os.fspath(path)
    try:
        obj = load_torch_file(path, key)
    except CheckpointError as exc:
        if "holds Python objects" not in str(exc):
            raise
        what = re.search(r"holds Python objects [^(]*\(([^)]*)\)", str(exc))
        raise CheckpointError(f"{key} '{path}' holds a pickled object that weights-only loading refuses "
                              f"({what.group(1) if what else 'not only tensors'}); save model.state_dict() "
                              f"instead") from None
    state = obj if _is_state_dict(obj) else None
    if state is None and isinstance(obj, dict):
        state = next((obj[e] for e in STATE_DICT_ENTRIES if _is_state_dict(obj.get(e))), None)
    if state is None:
        raise CheckpointError(f"{key} '{path}' holds {_describe(obj)}, not a state dict: expected a dict of "
                              f"parameter names to tensors (torch.save(model.state_dict(), path)), or a dict "
                              f"with one in {' / '.join(repr(e) for e in STATE_DICT_ENTRIES)}")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _describe(obj) -> str:
    if isinstance(obj, dict):
        if not obj:
            return "an empty dict"
        keys = ", ".join(repr(k) for k in list(obj)[:4]) + (", ..." if len(obj) > 4 else "")
        return f"a dict (keys {keys}) whose values are not all tensors"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"
