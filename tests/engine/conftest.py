"""A tiny training setup shared by the engine tests: a few 64-pixel synthetic images, a C5 ResNet-18."""

import pytest

from detkit.config import load_config

from .memorise_setup import train_memorised_run


def tiny_overrides(tmp_path, **extra):
    """Overrides that make a full train -> eval run take seconds on a CPU."""
    values = {
        "data.format": "synthetic",
        "data.synthetic.cache_dir": str(tmp_path / "synthetic"),
        "data.synthetic.num_train": 8,
        "data.synthetic.num_val": 4,
        "data.synthetic.image_size": 64,
        "data.min_size": [64],
        "data.max_size": 64,
        "model.backbone.features": "c5",
        "model.anchors.sizes": [[16.0, 32.0, 64.0]],
        "model.anchors.ratios": [1.0],
        "model.rpn.pre_nms_top_n_train": 50,
        "model.rpn.post_nms_top_n_train": 20,
        "model.rpn.pre_nms_top_n_test": 50,
        "model.rpn.post_nms_top_n_test": 20,
        "model.roi_head.batch_size_per_image": 16,
        "model.roi_head.fc_dim": 32,
        "train.epochs": 2,
        "train.batch_size": 2,
        "train.lr": 0.01,
        "train.warmup_iters": 2,
        "train.log_every": 1,
        "eval.batch_size": 2,
        "output.dir": str(tmp_path / "run"),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def train_tiny_run(tmp_path, **extra):
    """Train the tiny setup (with ``extra`` overrides) into ``tmp_path/run`` and return that run folder."""
    from detkit.engine.trainer import Trainer

    Trainer(load_config(None, tiny_overrides(tmp_path, **extra)), quiet=True, log=lambda *_: None).run()
    return tmp_path / "run"


@pytest.fixture
def tiny_cfg(tmp_path):
    def make(**extra):
        return load_config(None, tiny_overrides(tmp_path, **extra))
    return make


@pytest.fixture(scope="session")
def memorised_run(tmp_path_factory):
    """(config, final metrics) of the memorising run (tests/engine/memorise_setup.py), trained once per
    session; its folder is ``Path(config.output.dir)``. Read it, never write into it."""
    return train_memorised_run(tmp_path_factory.mktemp("memorised"))
