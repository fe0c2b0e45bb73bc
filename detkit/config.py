"""Configuration: nested dataclasses, strict YAML loading, dotted command-line overrides, validation.

A config file only sets fields of the dataclasses below; there is no inheritance and no
``type=`` lookup. Loading is strict: an unknown key at any depth raises :class:`ConfigError`
naming the full dotted key and the nearest valid one, a value of the wrong type names the key,
the expected type and the value given, and :func:`validate` rejects out-of-range values.

Defaults follow torchvision's Faster R-CNN wherever it has one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from detkit.atomic_io import atomic_open
from detkit.errors import ConfigError

__all__ = [
    "Config", "ModelConfig", "BackboneConfig", "AnchorConfig", "RPNConfig", "RoIHeadConfig",
    "DataConfig", "SplitConfig", "SyntheticConfig", "AugmentConfig", "TrainConfig", "EvalConfig",
    "OutputConfig", "ConfigError", "load_config", "read_config_file", "save_config", "replace_values",
    "apply_overrides", "config_from_dict", "config_to_dict", "validate",
]

# Every GroupNorm detkit builds (backbone and FPN with model.backbone.norm / fpn_norm = gn, the box head
# with model.roi_head.fc_norm / conv_norm = gn) splits its channels into this many groups (Wu & He,
# "Group Normalization", 2018); validate() rejects channel counts it does not divide.
GROUP_NORM_GROUPS = 32

# The RoI head's box regression losses model.roi_head.box_loss may name (detkit/modeling/roi_head.py
# implements them and gives each its default weight).
BOX_LOSSES = ("smooth_l1", "giou")

# The norms model.backbone.fpn_norm may name (besides true = the backbone's norm, false = none).
FPN_NORMS = ("bn", "sync_bn", "gn")


_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _choices(*values: str) -> dict:
    return {"choices": values}


# --------------------------------------------------------------------------- model
@dataclass
class BackboneConfig:
    depth: int = field(default=18, metadata=_choices(18, 34, 50, 101))
    # bn: trainable BatchNorm (from scratch); frozen_bn: fixed affine + statistics;
    # sync_bn: BatchNorm synchronised across DDP processes; gn: GroupNorm(32).
    # null (auto): frozen_bn when the run starts from pretrained weights (model.weights or
    # model.backbone.weights), else bn; resolved when the Config is built (ModelConfig.__post_init__).
    norm: Optional[str] = field(default=None, metadata=_choices("bn", "frozen_bn", "sync_bn", "gn"))
    # Freeze the stem and the first `freeze_at` residual stages (0 = train everything).
    # null (auto): 2 (stem + layer1, torchvision's trainable_backbone_layers=3) with pretrained weights, else 0.
    freeze_at: Optional[int] = field(default=None, metadata={"min": 0, "max": 5})
    # fpn: P2..P6 (strides 4..64); c4 / c5: a single level of stride 16 / 32.
    features: str = field(default="fpn", metadata=_choices("fpn", "c4", "c5"))
    fpn_channels: int = field(default=256, metadata={"gt": 0})
    # Zero-initialise the last norm gamma of every residual block (each block starts as the identity).
    zero_init_residual: bool = False
    # Normalise the FPN's lateral and output convs. false: unnormalised (torchvision's default FPN);
    # true: with the backbone's norm layer (BatchNorm for bn / sync_bn, GroupNorm for gn; not with
    # frozen_bn); bn / sync_bn / gn: with that norm whatever the backbone's (torchvision's
    # fasterrcnn_resnet50_fpn_v2: a frozen_bn body and a bn FPN). Needs features = fpn.
    fpn_norm: Union[bool, str] = field(default=False, metadata=_choices(False, True, *FPN_NORMS))
    # eps of the body's norm layers (BatchNorm2d, FrozenBatchNorm2d, GroupNorm); the FPN's keep 1e-5.
    # torchvision's COCO_V1 Faster R-CNN (v1) weights were trained with frozen BatchNorm at eps 0.0.
    norm_eps: float = field(default=1e-5, metadata={"min": 0.0})
    # Optional initial backbone weights (detkit/hub.py): a local state dict (a torchvision ResNet's, a
    # detkit checkpoint, a torchvision detector's), or a torchvision weights name such as
    # "torchvision:ResNet50_Weights.IMAGENET1K_V2", read from torch hub's cache (downloaded there if missing).
    weights: Optional[str] = None


@dataclass
class AnchorConfig:
    mode: str = field(default="manual", metadata=_choices("manual", "kmeans", "learned"))
    # Per level: anchor sizes (sqrt of area, in network-input pixels). One inner list per level.
    sizes: List[List[float]] = field(default_factory=lambda: [[32.0], [64.0], [128.0], [256.0], [512.0]])
    # Aspect ratios h / w, shared by all levels.
    ratios: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # Anchor centre offset in units of stride: 0.0 as torchvision, 0.5 as Detectron2.
    offset: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    # torchvision's anchor arithmetic, for models that reproduce torchvision's: round the zero-centred
    # base anchors to integers, and take each level's stride as padded image size // feature size per
    # axis (so P6 of an 800-row batch, 13 rows, has a row stride of 61, not 64).
    round_base: bool = False
    strides_from_size: bool = False
    # Resolved anchor shapes, L levels x A shapes x (w, h). Filled in by training (any mode) and
    # stored in the resolved config and checkpoints so that evaluation rebuilds the same anchors.
    shapes: Optional[List[List[List[float]]]] = None
    seed: int = 0
    # k-means: restarts and iterations per restart; hill-climb refinement steps (0 = off).
    kmeans_restarts: int = field(default=10, metadata={"gt": 0})
    kmeans_iters: int = field(default=300, metadata={"gt": 0})
    hill_climb_steps: int = field(default=1000, metadata={"min": 0})
    # learned: Adam steps and learning rate on log(w), log(h); softmax temperature of smooth best IoU.
    learned_steps: int = field(default=300, metadata={"gt": 0})
    learned_lr: float = field(default=0.05, metadata={"gt": 0.0})
    learned_temperature: float = field(default=0.05, metadata={"gt": 0.0})
    learned_init: str = field(default="kmeans", metadata=_choices("manual", "kmeans"))
    # Size band of each level in units of its stride (sqrt(w*h) / stride), used by learned anchors.
    band: List[float] = field(default_factory=lambda: [4.0, 16.0])
    # Online refinement of learned anchors during LR warm-up only (then frozen). 0 = off.
    online_warmup: bool = False
    # At most this many training boxes are used to fit anchors (a seeded subsample beyond it).
    max_fit_boxes: int = field(default=50000, metadata={"gt": 0})


@dataclass
class RPNConfig:
    fg_iou_thresh: float = field(default=0.7, metadata={"min": 0.0, "max": 1.0})
    bg_iou_thresh: float = field(default=0.3, metadata={"min": 0.0, "max": 1.0})
    allow_low_quality_matches: bool = True
    batch_size_per_image: int = field(default=256, metadata={"gt": 0})
    positive_fraction: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    pre_nms_top_n_train: int = field(default=2000, metadata={"gt": 0})
    post_nms_top_n_train: int = field(default=2000, metadata={"gt": 0})
    pre_nms_top_n_test: int = field(default=1000, metadata={"gt": 0})
    post_nms_top_n_test: int = field(default=1000, metadata={"gt": 0})
    nms_thresh: float = field(default=0.7, metadata={"min": 0.0, "max": 1.0})
    score_thresh: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    min_size: float = field(default=1e-3, metadata={"min": 0.0})
    box_weights: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    delta_clamp: float = field(default=math.log(1000.0 / 16), metadata={"gt": 0.0})
    smooth_l1_beta: float = field(default=1.0 / 9, metadata={"min": 0.0})
    # Intersection-over-anchor-area above which an ignore region (crowd / difficult) ignores an anchor.
    ignore_iof_thresh: Optional[float] = 0.5
    # 3x3 conv + ReLU layers of the head before its two 1x1 outputs: 1 as torchvision's RPNHead, 2 as
    # fasterrcnn_resnet50_fpn_v2 (RPNHead(conv_depth=2)).
    head_convs: int = field(default=1, metadata={"min": 1})


@dataclass
class RoIHeadConfig:
    fg_iou_thresh: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    bg_iou_thresh: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    batch_size_per_image: int = field(default=512, metadata={"gt": 0})
    positive_fraction: float = field(default=0.25, metadata={"min": 0.0, "max": 1.0})
    box_weights: List[float] = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    delta_clamp: float = field(default=math.log(1000.0 / 16), metadata={"gt": 0.0})
    smooth_l1_beta: float = field(default=1.0 / 9, metadata={"min": 0.0})
    # Box regression loss of the positive RoIs (every cascade stage's; the RPN keeps smooth L1):
    # smooth_l1 on the encoded deltas (torchvision), or giou: 1 - GIoU of the decoded boxes against the
    # ground truth (MMDetection's reg_decoded_bbox + GIoULoss), which trains the overlap AP75 measures.
    box_loss: str = field(default="smooth_l1", metadata=_choices(*BOX_LOSSES))
    # Multiplies that loss; null: 1 for smooth_l1, 10 for giou (MMDetection's GIoU weight).
    box_loss_weight: Optional[float] = field(default=None, metadata={"gt": 0.0})
    pool_size: int = field(default=7, metadata={"gt": 0})
    sampling_ratio: int = field(default=2, metadata={"min": 0})
    aligned: bool = False
    # 3x3 conv (+ norm) + ReLU layers of conv_dim channels on the pooled RoIs before the FC layers
    # (torchvision's FastRCNNConvFCHead): 0 = FC layers only (torchvision's TwoMLPHead); 4 convs of 256
    # with bn and num_fc = 1 is fasterrcnn_resnet50_fpn_v2's head.
    num_conv: int = field(default=0, metadata={"min": 0})
    conv_dim: int = field(default=256, metadata={"gt": 0})
    # Norm after each of those convs: none (the convs keep a bias), bn (BatchNorm2d over the RoIs, as
    # torchvision v2) or gn (GroupNorm, 32 groups, per RoI).
    conv_norm: str = field(default="bn", metadata=_choices("none", "bn", "gn"))
    num_fc: int = field(default=2, metadata={"gt": 0})
    fc_dim: int = field(default=1024, metadata={"gt": 0})
    # Normalisation after each FC layer: none (torchvision), ln (LayerNorm) or gn (GroupNorm, 32 groups).
    fc_norm: str = field(default="none", metadata=_choices("none", "ln", "gn"))
    class_agnostic: bool = False
    score_thresh: float = field(default=0.05, metadata={"min": 0.0, "max": 1.0})
    nms_thresh: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    # Per-class suppression of the detections: hard NMS at nms_thresh (torchvision), or soft-NMS that
    # decays overlapping scores instead of dropping the boxes ("linear": by 1 - IoU above nms_thresh;
    # "gaussian": by exp(-IoU^2 / soft_nms_sigma)), dropping what falls under score_thresh. Soft-NMS
    # has no ONNX/TorchScript form: export with nms_method=hard.
    nms_method: str = field(default="hard", metadata=_choices("hard", "linear", "gaussian"))
    soft_nms_sigma: float = field(default=0.5, metadata={"gt": 0.0})
    # Box voting after the suppression (detkit.ops.box_voting): null (off), or an IoU (Detectron's 0.8):
    # each detection's box becomes the score-weighted mean of the candidate boxes of its class that
    # overlap it at least that much. Scores unchanged; an inference setting, not exportable.
    box_voting: Optional[float] = field(default=None, metadata={"min": 0.0, "max": 1.0})
    detections_per_img: int = field(default=100, metadata={"gt": 0})
    min_size: float = field(default=1e-2, metadata={"min": 0.0})
    ignore_iof_thresh: Optional[float] = 0.5
    # Cascade R-CNN (detkit/modeling/cascade_head.py): one stage per IoU threshold, rising in (0, 1), at
    # least 2, e.g. [0.5, 0.6, 0.7]. Each stage has its own box head (the one configured above), its own
    # class-agnostic box regression (class_agnostic is not read) and box_weights x its stage number, and
    # assigns the previous stage's refined boxes at its threshold (fg_iou_thresh / bg_iou_thresh are not
    # read). null or []: the single head.
    cascade: Optional[List[float]] = None
    # Loss weight of each cascade stage (one per threshold); null: 1, 0.5, 0.25, ... (halved per stage).
    cascade_loss_weights: Optional[List[float]] = None


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi_head: RoIHeadConfig = field(default_factory=RoIHeadConfig)
    # Input normalisation (RGB, images scaled to [0, 1] first): ImageNet statistics.
    pixel_mean: List[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    pixel_std: List[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    # Padded batch sides are rounded up to a multiple of this (the largest stride).
    size_divisible: int = field(default=32, metadata={"gt": 0})
    # Layout of the feature maps and convolution weights. channels_last (NHWC) is what oneDNN's fast
    # bf16 convolutions and the RoIAlign kernel work in; auto also picks it, except for fp32 training on an
    # x86 CPU without AVX-512, which runs faster contiguous (detkit/runtime/memory_format.py). Checkpoints
    # load into either layout.
    memory_format: str = field(default="auto", metadata=_choices("auto", "channels_last", "contiguous"))
    # Test-time augmentation: average each image's detections with its left-right mirror image's
    # (per proposal, before NMS). Twice the backbone work at inference; not part of exported graphs.
    test_hflip: bool = False
    # Scale test-time augmentation: factors of the test size (data.test_min_size / max_size) at which each
    # image is also seen, e.g. [1.0, 1.25]; must include 1.0, the scale the RPN proposes at. The RoI head
    # averages every scale (and, with test_hflip, its mirror image) per proposal before NMS. [1.0]: off.
    test_scales: List[float] = field(default_factory=lambda: [1.0])
    # The box kernels of inference: "detkit" (Numba RoIAlign on the CPU; NMS and the RPN's top-k with
    # detkit's one tie-break, equal scores by increasing index, shared with the exported graph) or
    # "torchvision" (torchvision.ops.roi_align / batched_nms and torch.topk, as torchvision's detectors
    # call them: bit-identical detections with torchvision's weights, ties broken as torchvision does).
    kernels: str = field(default="detkit", metadata=_choices("detkit", "torchvision"))
    # The whole detector's start (detkit/weights/start.py): a detkit checkpoint, a torchvision detection
    # state dict file, or a torchvision weights name ("torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1").
    # Tensors of the same name and shape are loaded; the class rows of the box predictor are copied per
    # class name (detkit/weights/transfer.py). Read when a run starts, never on a resume.
    weights: Optional[str] = None
    # Data class name -> the weights' class name, for synonyms ({motorbike: motorcycle}); matched
    # case-insensitively, applied before the names themselves.
    class_map: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        resolve_backbone_defaults(self)


def resolve_backbone_defaults(model: "ModelConfig") -> None:
    """Fill in the automatic (null) ``model.backbone.norm`` and ``model.backbone.freeze_at``, in place.

    From pretrained weights (``model.weights`` or ``model.backbone.weights`` set): ``frozen_bn`` and 2
    (stem and layer1 frozen, torchvision's ``trainable_backbone_layers=3``); from scratch: ``bn`` and 0.
    With ``fpn_norm = true`` (the FPN takes the backbone's norm, which must train) the automatic norm is
    ``bn``. Values the config sets are kept; the resolved ones are what config.yaml and checkpoints hold.
    """
    bb = model.backbone
    if not dataclasses.is_dataclass(bb):
        return
    pretrained = bool(model.weights or bb.weights)
    if bb.norm is None:
        bb.norm = "frozen_bn" if pretrained and bb.fpn_norm is not True else "bn"
    if bb.freeze_at is None:
        bb.freeze_at = 2 if pretrained else 0


# --------------------------------------------------------------------------- data
@dataclass
class SplitConfig:
    """Where one split's images and annotations live.

    VOC, official layout: ``roots`` (one or more VOC roots) and ``splits`` (one name per root,
    or one name for all), read from ``<root>/ImageSets/Main/<split>.txt``.
    VOC, any folder: ``roots: [folder]`` with ``ann_dir`` / ``img_dir`` relative to it, and
    ``split_file`` (a list of ids) or no split at all (``splits: []``: every XML file).
    COCO: ``ann_file`` (JSON) and ``img_dir`` (relative to the first root, or absolute).
    YOLO: ``roots`` and ``splits`` (``images/<split>`` + ``labels/<split>``, ``<split>/images`` +
    ``<split>/labels``, or side by side; see detkit/data/yolo.py), or ``split_file`` (image paths).
    """

    roots: List[str] = field(default_factory=list)
    splits: List[str] = field(default_factory=list)
    ann_dir: str = "Annotations"
    img_dir: str = "JPEGImages"
    split_file: Optional[str] = None
    ann_file: Optional[str] = None


@dataclass
class SyntheticConfig:
    """The built-in synthetic shapes set (generated into ``cache_dir`` as images + COCO JSON)."""

    cache_dir: str = ".cache/detkit/synthetic"
    num_train: int = field(default=300, metadata={"gt": 0})
    num_val: int = field(default=60, metadata={"gt": 0})
    image_size: int = field(default=128, metadata={"min": 32})
    max_objects: int = field(default=4, metadata={"gt": 0})
    empty_fraction: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    seed: int = 0


@dataclass
class AutoSplitConfig:
    """Train / val split of a data set that has none (detkit/data/auto_split.py): the data.train source
    is divided, by image, stratified so that every class appears on both sides when it can. The split
    is written to the run folder as split.json; ``file`` reuses such a file instead of recomputing."""

    val_fraction: Optional[float] = field(default=None, metadata={"gt": 0.0, "max": 0.9})  # null = off
    seed: int = 0
    file: Optional[str] = None  # a split.json (from a run folder) to reuse


@dataclass
class AugmentConfig:
    hflip_prob: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})
    vflip_prob: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    # Bbox-safe random crop probability (albumentations.RandomSizedBBoxSafeCrop style).
    crop_prob: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    # Random scale jitter range applied before the resize (e.g. [0.8, 1.2]); null = off.
    scale_jitter: Optional[List[float]] = None
    color_jitter_prob: float = field(default=0.0, metadata={"min": 0.0, "max": 1.0})
    # Boxes keeping less than this fraction of their area after a crop are dropped.
    min_visibility: float = field(default=0.3, metadata={"min": 0.0, "max": 1.0})
    min_area: float = field(default=1.0, metadata={"min": 0.0})


@dataclass
class DataConfig:
    format: str = field(default="synthetic", metadata=_choices("synthetic", "voc", "coco", "yolo"))
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)
    # Class names (without background). null: taken from the data set (VOC: discovered, sorted; YOLO:
    # from names_file, or a data.yaml / classes.txt / obj.names in the training root).
    classes: Optional[List[str]] = None
    # YOLO: the class names file (Ultralytics data.yaml 'names', or one name per line), relative to the
    # first root of each split or absolute.
    names_file: Optional[str] = None
    # Automatic train / val split of data.train's source (data.val then stays empty).
    auto_split: AutoSplitConfig = field(default_factory=AutoSplitConfig)
    # VOC 'difficult' objects: ignore (ignore regions, excluded from eval), train, or drop.
    difficult: str = field(default="ignore", metadata=_choices("ignore", "train", "drop"))
    skip_bad_images: bool = False
    # Annotation files that cannot be parsed or are invalid (VOC XML, YOLO label files) and invalid
    # entries of a COCO JSON: all are listed and training stops, unless this skips and counts them.
    skip_bad_annotations: bool = False
    ignore_unknown_classes: bool = False
    # COCO images with no annotation are kept as negatives unless this is set.
    drop_empty: bool = False
    # Resize: shorter side to one of min_size (a list = multi-scale training), longer side <= max_size.
    min_size: List[int] = field(default_factory=lambda: [800])
    max_size: int = field(default=1333, metadata={"gt": 0})
    test_min_size: Optional[int] = None  # null: the last entry of min_size
    # Where evaluation and inference resize: "pipeline" (the data pipeline, cv2 bilinear on the uint8
    # image) or "model" (the detector resizes the normalised float image itself, exactly as
    # torchvision's GeneralizedRCNNTransform: float32 scale, bilinear interpolate, pad; so that a model
    # with torchvision's weights gives torchvision's detections). Training always resizes in the pipeline.
    test_resize: str = field(default="pipeline", metadata=_choices("pipeline", "model"))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    aspect_ratio_grouping: bool = True
    num_workers: int = field(default=0, metadata={"min": 0})
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # COCO (and synthetic): keep the parsed annotation file and the image headers in
    # .<file>.detkit-index.npz beside the file (detkit/data/coco_tables.py), reused while the file's
    # size, mtime and hash are unchanged (an image's header while its size and mtime are); false = parse
    # every time. index_cache_dir: where the cache goes when the annotation folder is read-only.
    index_cache: bool = True
    index_cache_dir: Optional[str] = "~/.cache/detkit/index"


# --------------------------------------------------------------------------- train / eval / output
@dataclass
class TrainConfig:
    epochs: int = field(default=12, metadata={"gt": 0})
    batch_size: int = field(default=2, metadata={"gt": 0})  # global batch (all processes)
    optimizer: str = field(default="sgd", metadata=_choices("sgd", "adamw"))
    lr: float = field(default=0.02, metadata={"gt": 0.0})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})
    nesterov: bool = False
    weight_decay: float = field(default=1e-4, metadata={"min": 0.0})
    # No weight decay on normalisation weights and biases.
    no_decay_norm_bias: bool = False
    warmup_iters: int = field(default=200, metadata={"min": 0})
    warmup_factor: float = field(default=0.001, metadata={"gt": 0.0, "max": 1.0})
    schedule: str = field(default="multistep", metadata=_choices("multistep", "cosine", "constant"))
    # multistep: LR x gamma at these fractions of the total number of iterations.
    lr_steps: List[float] = field(default_factory=lambda: [0.75, 0.92])
    gamma: float = field(default=0.1, metadata={"gt": 0.0})
    grad_clip: Optional[float] = None
    # Evaluate and save an exponential moving average of the weights (detkit/engine/ema.py): decay in
    # (0, 1), e.g. 0.999; null = off (the trained weights, as torchvision). Its decay ramps up as
    # decay * (1 - exp(-iteration / ema_tau)).
    ema_decay: Optional[float] = field(default=None, metadata={"gt": 0.0})
    ema_tau: float = field(default=200.0, metadata={"gt": 0.0})
    # Autocast of the training step: auto | fp32 | bf16 | fp16 (detkit/runtime/precision.py). auto = bf16
    # where the CPU or GPU computes it natively (else fp16 on CUDA, fp32 on the CPU), printed at start.
    precision: str = field(default="auto", metadata=_choices("auto", "fp32", "bf16", "fp16"))
    seed: int = 0
    # cpu, cuda or cuda:N (under torchrun, plain cuda means each process's cuda:LOCAL_RANK). Asking for
    # CUDA where there is none stops at start with an error naming this key (detkit/runtime/device.py).
    device: str = "cpu"
    # CUDA only: torch.backends.cudnn.benchmark (cuDNN times its algorithms per input shape). Faster when
    # the padded batch shapes repeat; slower with multi-scale training, where most shapes are new.
    cudnn_benchmark: bool = False
    log_every: int = field(default=20, metadata={"gt": 0})
    eval_every: int = field(default=1, metadata={"min": 0})  # epochs; 0 = only at the end
    checkpoint_every: int = field(default=1, metadata={"gt": 0})  # epochs
    # Keep the weights of every evaluation as evaluated/epoch_NNN.pt (model, config, classes; no optimizer):
    # for evaluating them later on another split, e.g. a test-mAP-against-wall-time curve.
    keep_evaluated: bool = False
    max_iters: Optional[int] = None  # stop early after this many iterations (smoke runs)
    # Train to a wall-time budget in minutes (set-up, training, evaluations, the final one): the trainer
    # measures its speed over the first iterations and plans the epoch count (it replaces train.epochs;
    # the LR schedule follows the planned length), re-planned after the first evaluation and kept on a
    # resume (detkit/engine/hooks/time_budget.py). null = train.epochs. With max_iters too, max_iters wins:
    # the run stops at that iteration even when the plan has more.
    time_budget: Optional[float] = None


@dataclass
class EvalConfig:
    batch_size: int = field(default=2, metadata={"gt": 0})
    # Metric that selects best.pt: a key of eval.json's 'coco' block (mAP, AP50, AP75, ...).
    best_metric: str = "mAP"
    # Before each evaluation, re-estimate every BatchNorm layer's running statistics with the
    # current weights over this many training batches (test-time resize, no augmentation; capped
    # at one pass over the training set); 0 keeps the running averages of training. See
    # detkit/evaluation/precise_bn.py.
    precise_bn_batches: int = field(default=200, metadata={"min": 0})
    # Autocast of evaluation and inference (the tools, the Python API, evaluation during training):
    # the same choices as train.precision; the weights are fp32 whatever precision trained them.
    precision: str = field(default="auto", metadata=_choices("auto", "fp32", "bf16", "fp16"))
    # Inference outside training (detkit eval, detkit infer, detkit.load_model) folds every frozen
    # BatchNorm into the convolution before it (detkit/modeling/fold_bn.py): same outputs, fewer ops.
    fold_bn: bool = True
    # The COCOeval implementation: pycocotools (the reference) or faster (faster-coco-eval: the same
    # 12 numbers and per-class AP, its matching and accumulation in C++; several times faster on
    # COCO-sized sets). Held identical to pycocotools by tests/engine/test_eval_backends.py.
    backend: str = field(default="faster", metadata=_choices("pycocotools", "faster"))


@dataclass
class OutputConfig:
    dir: str = "runs/synthetic"
    plots: bool = True
    # TensorBoard event files in the run folder, with the scalars of metrics.jsonl (rank 0).
    tensorboard: bool = False
    # report.html in the run folder at the end of training (`detkit report RUN_DIR` writes it any time).
    report: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


# --------------------------------------------------------------------------- conversion
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        return f"{names} or null" if type(None) in args else names
    if origin in (list, List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin in (dict, Dict):
        key_tp, value_tp = typing.get_args(tp)
        return f"mapping of {_type_name(key_tp)} to {_type_name(value_tp)}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp` and return it converted (int -> float, nested dicts)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(value, options[0], key)
        for option in options:  # e.g. Union[bool, str]: the first type that takes the value as it is
            try:
                return _convert(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"key '{key}' expects {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"key '{key}' expects a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, List):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"key '{key}' expects {_type_name(tp)}, got {value!r}")
        item_tp = typing.get_args(tp)[0]
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"key '{key}' expects {_type_name(tp)}, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        return {_convert(k, key_tp, f"{key} (a key)"): _convert(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"key '{key}' expects bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"key '{key}' expects int, got {value!r}")
        return value
    if tp is float:
        # PyYAML reads '1e-3' (no dot) as a string (YAML 1.1); accept it as the number it means.
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"key '{key}' expects float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"key '{key}' expects str, got {value!r}")
        return value
    raise ConfigError(f"key '{key}': unsupported type {tp!r}")  # a bug in the dataclasses, not user input


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def _unknown_key_error(cls: type, prefix: str, name: str) -> ConfigError:
    full = f"{prefix}.{name}" if prefix else name
    valid = [f.name for f in dataclasses.fields(cls)]
    near = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    if near:
        suggestion = f"{prefix}.{near[0]}" if prefix else near[0]
        return ConfigError(f"unknown key '{full}' — did you mean '{suggestion}'?")
    where = f"'{prefix}'" if prefix else "the top level"
    return ConfigError(f"unknown key '{full}'; valid keys of {where}: {', '.join(valid)}")


def _choice_list(choices: Sequence[Any]) -> str:
    """The valid values as a user writes them in YAML: true / false for booleans, quoted strings."""
    return ", ".join(("true" if c else "false") if isinstance(c, bool) else repr(c) for c in choices)


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = _hints(cls)
    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(cls) if "choices" in f.metadata}
    kwargs = {}
    for name, value in data.items():
        if not isinstance(name, str) or name not in hints:
            raise _unknown_key_error(cls, prefix, str(name))
        key = f"{prefix}.{name}" if prefix else name
        try:
            kwargs[name] = _convert(value, hints[name], key)
        except ConfigError as exc:
            if name not in choices:
                raise
            raise ConfigError(f"{exc}; choose one of {_choice_list(choices[name])}") from None
    return cls(**kwargs)


def _migrate_legacy_keys(data: dict) -> dict:
    """Older configs (and the configs inside older checkpoints) in today's keys; ``data`` is not changed.

    ``train.amp`` (a bool, CUDA fp16 autocast) became ``train.precision``: amp false = fp32, amp true
    = auto (which picks bf16 or fp16 on CUDA).
    """
    train = data.get("train")
    if not isinstance(train, dict) or "amp" not in train:
        return data
    train = dict(train)
    amp = train.pop("amp")
    if not isinstance(amp, bool):
        raise ConfigError(f"key 'train.amp' (now 'train.precision') expects bool, got {amp!r}")
    train.setdefault("precision", "auto" if amp else "fp32")
    return {**data, "train": train}


def config_from_dict(data: Optional[dict]) -> Config:
    """Build and validate a :class:`Config` from a nested dict (missing keys take their defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping at the top level, got {type(data).__name__}")
    cfg = _build(Config, _migrate_legacy_keys(data))
    validate(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict:
    """The config as plain nested dicts and lists (what :func:`save_config` writes)."""
    return dataclasses.asdict(cfg)


# --------------------------------------------------------------------------- overrides
def _parse_override(text: str) -> tuple[list[str], Any]:
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"override {text!r} must look like 'dotted.key=value' (e.g. 'train.lr=0.01')")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key; expected 'dotted.key=value'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value {raw!r} is not valid YAML ({exc})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Apply ``dotted.key=value`` strings to a nested dict (values are parsed as YAML).

    Keys are checked against the dataclasses as they are walked, so a typo is reported with
    its full dotted name and the nearest valid key even before the whole config is built.
    """
    for text in overrides:
        parts, value = _parse_override(text)
        cls: Any = Config
        node = data
        for depth, part in enumerate(parts):
            prefix = ".".join(parts[:depth])
            hints = _hints(cls) if dataclasses.is_dataclass(cls) else {}
            if part not in hints:
                if not dataclasses.is_dataclass(cls):
                    raise ConfigError(f"override '{text}': '{prefix}' is a value, not a section")
                raise _unknown_key_error(cls, prefix, part)
            tp = hints[part]
            if depth == len(parts) - 1:
                node[part] = value
            else:
                if not dataclasses.is_dataclass(tp):
                    raise ConfigError(f"override '{text}': '{prefix + '.' if prefix else ''}{part}' "
                                      f"is a value of type {_type_name(tp)}, not a section")
                child = node.get(part)
                if child is None:
                    child = node[part] = {}
                elif not isinstance(child, dict):
                    raise ConfigError(f"override '{text}': '{part}' must be a mapping in the config")
                node, cls = child, tp
    return data


# --------------------------------------------------------------------------- load / save
def read_config_file(path) -> dict:
    """The nested mapping a YAML config file holds, as written (no defaults filled in, nothing checked).

    Raises:
        ConfigError: the file is missing, not YAML, or not a mapping at the top level.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level")
    return data


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (or start from the defaults when `path` is None) and apply overrides.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown (the message suggests the
            nearest valid one), a value has the wrong type or is out of range.
    """
    data = {} if path is None else read_config_file(path)
    data = apply_overrides(data, list(overrides))
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        if path is None:
            raise
        raise ConfigError(f"{path}: {exc}") from None


def replace_values(cfg: Config, values: Dict[str, Any]) -> Config:
    """A new Config: ``cfg`` with the dotted keys of ``values`` set, validated; ``cfg`` itself is not changed.

    How the values a run resolves (its anchor shapes, its split file) reach config.yaml and every
    checkpoint while the live config stays what the user gave.
    """
    data = config_to_dict(cfg)
    for key, value in values.items():
        *parents, name = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        if name not in node:
            raise KeyError(f"no config key {key!r}")
        node[name] = value
    return config_from_dict(data)


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config as YAML, atomically (a crash never leaves half a file)."""
    with atomic_open(path, "w") as f:
        yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False, default_flow_style=None)


# --------------------------------------------------------------------------- validation
def _check_field_ranges(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_field_ranges(value, key)
            continue
        meta = f.metadata
        if value is None:
            continue
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(f"key '{key}' = {value!r} is not valid; choose one of {_choice_list(meta['choices'])}")
        if "min" in meta and value < meta["min"]:
            raise ConfigError(f"key '{key}' = {value!r} must be >= {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise ConfigError(f"key '{key}' = {value!r} must be <= {meta['max']}")
        if "gt" in meta and not value > meta["gt"]:
            raise ConfigError(f"key '{key}' = {value!r} must be > {meta['gt']}")


def _check_positive_list(values: Sequence[float], key: str, length: Optional[int] = None) -> None:
    if length is not None and len(values) != length:
        raise ConfigError(f"key '{key}' must have {length} entries, got {len(values)}: {values!r}")
    for i, v in enumerate(values):
        if not v > 0:
            raise ConfigError(f"key '{key}[{i}]' = {v!r} must be > 0")


def _check_cascade(thresholds: Optional[Sequence[float]], loss_weights: Optional[Sequence[float]]) -> None:
    """model.roi_head.cascade: null / [] (single head) or >= 2 rising IoU thresholds in (0, 1); its loss weights."""
    key = "model.roi_head.cascade"
    if not thresholds:
        if loss_weights is not None:
            raise ConfigError(f"key 'model.roi_head.cascade_loss_weights' = {list(loss_weights)} weighs the stages "
                              f"of a cascade, but {key} is not set; set {key} (e.g. [0.5, 0.6, 0.7]) or "
                              f"cascade_loss_weights = null")
        return
    if len(thresholds) < 2:
        raise ConfigError(f"key '{key}' = {list(thresholds)} needs at least 2 stages (one IoU threshold each, e.g. "
                          f"[0.5, 0.6, 0.7]); use null for the single RoI head")
    for i, iou in enumerate(thresholds):
        if not 0.0 < iou < 1.0:
            raise ConfigError(f"key '{key}[{i}]' = {iou!r} must be an IoU threshold in (0, 1), e.g. [0.5, 0.6, 0.7]")
    if any(b <= a for a, b in zip(thresholds[:-1], thresholds[1:])):
        raise ConfigError(f"key '{key}' = {list(thresholds)} must rise from stage to stage (each threshold above "
                          f"the one before), e.g. [0.5, 0.6, 0.7]")
    if loss_weights is not None:
        _check_positive_list(loss_weights, "model.roi_head.cascade_loss_weights", len(thresholds))


def _check_test_scales(scales: Sequence[float]) -> None:
    """model.test_scales: distinct factors in (0, 4] including 1.0."""
    key = "model.test_scales"
    if not scales:
        raise ConfigError(f"key '{key}' must list at least one scale; [1.0] for no scale test-time augmentation")
    for i, v in enumerate(scales):
        if not 0.0 < v <= 4.0:
            raise ConfigError(f"key '{key}[{i}]' = {v!r} must be a factor of the test size in (0, 4], e.g. 1.25")
    if 1.0 not in scales:
        raise ConfigError(f"key '{key}' = {list(scales)} must include 1.0, the scale the RPN proposes at "
                          f"(e.g. [1.0, 1.25])")
    if len(set(scales)) != len(scales):
        raise ConfigError(f"key '{key}' = {list(scales)} lists a scale twice")


def validate(cfg: Config) -> None:
    """Reject out-of-range values and inconsistent combinations, naming the key and what is valid."""
    _check_field_ranges(cfg, "")
    s = cfg.data.auto_split
    if (s.val_fraction is not None or s.file is not None) and (cfg.data.val.roots or cfg.data.val.ann_file):
        raise ConfigError("key 'data.auto_split' divides data.train's images into train and val, but data.val is "
                          "also given; set data.val.roots=[] (and data.val.ann_file=null), or turn the split off")
    m = cfg.model
    for name, head in (("model.rpn", m.rpn), ("model.roi_head", m.roi_head)):
        if head.bg_iou_thresh > head.fg_iou_thresh:
            raise ConfigError(f"key '{name}.bg_iou_thresh' = {head.bg_iou_thresh} must not exceed "
                              f"'{name}.fg_iou_thresh' = {head.fg_iou_thresh}")
        _check_positive_list(head.box_weights, f"{name}.box_weights", 4)
    a = m.anchors
    if not a.sizes or any(len(level) == 0 for level in a.sizes):
        raise ConfigError("key 'model.anchors.sizes' must give at least one size for every level")
    if len({len(level) for level in a.sizes}) != 1:
        raise ConfigError(f"key 'model.anchors.sizes' must give the same number of sizes on every level "
                          f"(the RPN head is shared), got {[len(level) for level in a.sizes]}")
    for i, level in enumerate(a.sizes):
        _check_positive_list(level, f"model.anchors.sizes[{i}]")
    if not a.ratios:
        raise ConfigError("key 'model.anchors.ratios' must not be empty")
    _check_positive_list(a.ratios, "model.anchors.ratios")
    _check_positive_list(a.band, "model.anchors.band", 2)
    if a.band[0] >= a.band[1]:
        raise ConfigError(f"key 'model.anchors.band' = {a.band} must be [low, high] with low < high")
    expected_levels = 5 if m.backbone.features == "fpn" else 1
    if len(a.sizes) != expected_levels:
        raise ConfigError(f"key 'model.anchors.sizes' has {len(a.sizes)} levels but "
                          f"model.backbone.features = '{m.backbone.features}' gives {expected_levels}")
    if a.shapes is not None:
        if len(a.shapes) != expected_levels:
            raise ConfigError(f"key 'model.anchors.shapes' has {len(a.shapes)} levels, expected {expected_levels}")
        counts = {len(level) for level in a.shapes}
        if len(counts) != 1 or 0 in counts:
            raise ConfigError("key 'model.anchors.shapes' must hold the same non-zero number of (w, h) "
                              "shapes on every level")
        for i, level in enumerate(a.shapes):
            for j, wh in enumerate(level):
                _check_positive_list(wh, f"model.anchors.shapes[{i}][{j}]", 2)
    bb = m.backbone
    if bb.fpn_norm is not False and bb.features != "fpn":
        raise ConfigError(f"key 'model.backbone.fpn_norm' = {_choice_list([bb.fpn_norm])} needs "
                          f"model.backbone.features = 'fpn', got '{bb.features}'")
    if bb.fpn_norm is True and bb.norm == "frozen_bn":
        raise ConfigError("key 'model.backbone.fpn_norm' = true needs a trainable model.backbone.norm "
                          "('bn', 'sync_bn' or 'gn'), got 'frozen_bn'; or name the FPN's own norm: "
                          f"fpn_norm = {' / '.join(FPN_NORMS)}")
    if a.online_warmup and a.mode != "learned":
        raise ConfigError(f"key 'model.anchors.online_warmup' = true refines learned anchors only; "
                          f"set model.anchors.mode = learned (got '{a.mode}') or online_warmup = false")
    if bb.features == "fpn" and (bb.fpn_norm == "gn" or (bb.fpn_norm is True and bb.norm == "gn")) \
            and bb.fpn_channels % GROUP_NORM_GROUPS:
        raise ConfigError(f"key 'model.backbone.fpn_norm' normalises the FPN with GroupNorm ({GROUP_NORM_GROUPS} "
                          f"groups), so model.backbone.fpn_channels must be a multiple of {GROUP_NORM_GROUPS} "
                          f"(got {bb.fpn_channels})")
    h = m.roi_head
    if h.num_conv > 0 and h.conv_norm == "gn" and h.conv_dim % GROUP_NORM_GROUPS:
        raise ConfigError(f"key 'model.roi_head.conv_norm' = gn splits the conv channels into {GROUP_NORM_GROUPS} "
                          f"groups, so model.roi_head.conv_dim must be a multiple of {GROUP_NORM_GROUPS} "
                          f"(got {h.conv_dim}); or use conv_norm = bn or none")
    _check_cascade(h.cascade, h.cascade_loss_weights)
    if h.fc_norm == "gn" and h.fc_dim % GROUP_NORM_GROUPS:
        raise ConfigError(f"key 'model.roi_head.fc_norm' = gn splits the FC features into {GROUP_NORM_GROUPS} "
                          f"groups, so model.roi_head.fc_dim must be a multiple of {GROUP_NORM_GROUPS} "
                          f"(got {h.fc_dim}); or use fc_norm = ln")
    _check_test_scales(m.test_scales)
    _check_positive_list(m.pixel_std, "model.pixel_std", 3)
    if len(m.pixel_mean) != 3:
        raise ConfigError(f"key 'model.pixel_mean' must have 3 entries, got {m.pixel_mean!r}")

    d = cfg.data
    if not d.min_size:
        raise ConfigError("key 'data.min_size' must list at least one shorter-side size")
    _check_positive_list(d.min_size, "data.min_size")
    if d.test_min_size is not None and d.test_min_size <= 0:
        raise ConfigError(f"key 'data.test_min_size' = {d.test_min_size} must be > 0")
    if d.classes is not None:
        if not d.classes:
            raise ConfigError("key 'data.classes' must not be an empty list (use null to discover them)")
        if len(set(d.classes)) != len(d.classes):
            raise ConfigError(f"key 'data.classes' has duplicate names: {d.classes}")
    if d.augment.scale_jitter is not None:
        _check_positive_list(d.augment.scale_jitter, "data.augment.scale_jitter", 2)
        if d.augment.scale_jitter[0] > d.augment.scale_jitter[1]:
            raise ConfigError(f"key 'data.augment.scale_jitter' = {d.augment.scale_jitter} must be [low, high]")
    if d.format in ("voc", "coco"):
        for split_name in ("train", "val"):
            s = getattr(d, split_name)
            if d.format == "coco" and s.ann_file is None:
                raise ConfigError(f"key 'data.{split_name}.ann_file' is required when data.format = 'coco'")
            if d.format == "voc" and not s.roots:
                raise ConfigError(f"key 'data.{split_name}.roots' must list at least one folder "
                                  f"when data.format = 'voc'")
            if s.splits and len(s.splits) not in (1, len(s.roots)):
                raise ConfigError(f"key 'data.{split_name}.splits' must have one entry or one per root "
                                  f"({len(s.roots)}), got {s.splits}")

    t = cfg.train
    for i, step in enumerate(t.lr_steps):
        if not 0.0 < step <= 1.0:
            raise ConfigError(f"key 'train.lr_steps[{i}]' = {step} must be a fraction of the run in (0, 1]")
    if sorted(t.lr_steps) != list(t.lr_steps):
        raise ConfigError(f"key 'train.lr_steps' = {t.lr_steps} must be increasing")
    if t.ema_decay is not None and not t.ema_decay < 1.0:
        raise ConfigError(f"key 'train.ema_decay' = {t.ema_decay} must be in (0, 1), e.g. 0.999, or null for no "
                          f"moving average")
    if t.grad_clip is not None and t.grad_clip <= 0:
        raise ConfigError(f"key 'train.grad_clip' = {t.grad_clip} must be > 0 or null")
    if t.max_iters is not None and t.max_iters <= 0:
        raise ConfigError(f"key 'train.max_iters' = {t.max_iters} must be > 0 or null")
    if t.time_budget is not None and not 0 < t.time_budget < math.inf:
        raise ConfigError(f"key 'train.time_budget' = {t.time_budget} must be a number of minutes > 0, e.g. 30, "
                          f"or null to train for train.epochs")
    if not (t.device == "cpu" or t.device == "cuda" or t.device.startswith("cuda:")):
        raise ConfigError(f"key 'train.device' = {t.device!r} is not valid; use 'cpu', 'cuda' or 'cuda:N'")
