"""detkit: two-stage object detection training (ResNet+BN, RPN, RoI head, Numba box kernels).

The few names a script needs::

    import detkit
    cfg = detkit.load_config("configs/synthetic.yaml", ["train.epochs=1"])   # YAML + dotted overrides
    metrics = detkit.train(cfg)                                              # what `detkit train` does
    model = detkit.load_model("runs/synthetic/best.pt")                      # a Predictor
    found = model.predict("image.jpg")                                       # boxes, scores, labels, names

and ``detkit.build_detector(cfg, num_classes)`` for the bare ``nn.Module``. Box operators are in
:mod:`detkit.ops`, model components in :mod:`detkit.modeling`. Names are imported on first use,
so ``import detkit.config`` stays light.
"""

from detkit.version import __version__

__all__ = ["load_config", "build_detector", "train", "Trainer", "load_model", "Predictor", "__version__"]

_LAZY = {
    "load_config": ("detkit.config", "load_config"),
    "build_detector": ("detkit.modeling.detector", "build_detector"),
    "Trainer": ("detkit.engine.trainer", "Trainer"),
    "train": ("detkit.report.training", "train"),
    "load_model": ("detkit.deploy.predictor", "load_model"),
    "Predictor": ("detkit.deploy.predictor", "Predictor"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'detkit' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
