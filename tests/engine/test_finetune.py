"""Fine-tuning from model.weights: the trainer transfers a checkpoint of other classes, reports it (log and
transfer.json), writes the resolved backbone defaults, and resumes without the weights file."""

import json

import pytest
import yaml

from detkit.config import load_config
from detkit.engine.trainer import Trainer
from detkit.weights.checkpoint import load_checkpoint

from .conftest import tiny_overrides, train_tiny_run


@pytest.fixture(scope="module")
def source_checkpoint(tmp_path_factory):
    """last.pt of a tiny run on two of the three synthetic classes."""
    tmp = tmp_path_factory.mktemp("source")
    run = train_tiny_run(tmp, **{"data.classes": ["circle", "square"], "train.max_iters": 2,
                                 "train.eval_every": 0})
    return run / "last.pt"


def finetune_cfg(tmp_path, weights, **extra):
    return load_config(None, tiny_overrides(tmp_path, **{"model.weights": str(weights), "train.eval_every": 0,
                                                         "eval.precise_bn_batches": 0, **extra}))


def test_training_from_a_checkpoint_of_other_classes_reports_the_transfer(tmp_path, source_checkpoint):
    messages = []
    Trainer(finetune_cfg(tmp_path, source_checkpoint, **{"train.max_iters": 2}), quiet=True,
            log=messages.append).run()
    total = len(load_checkpoint(source_checkpoint)["model"])
    lines = [m for m in messages if m.startswith("transferred ")]
    assert len(lines) == 1
    # the source ran with trainable BatchNorm, the fine-tuning run with frozen BatchNorm (no counters)
    assert lines[0].startswith("transferred ") and lines[0].endswith(
        f"tensors from detkit checkpoint '{source_checkpoint}'; classes from the checkpoint: circle, square; "
        f"new: triangle")
    assert not any(m.startswith("warning: model.backbone") for m in messages)

    out = tmp_path / "run"
    report = json.loads((out / "transfer.json").read_text())
    assert report["summary"] == lines[0]
    assert report["classes_new"] == ["triangle"] and report["classes_matched"] == {"circle": "circle",
                                                                                   "square": "square"}
    assert report["counts"]["transferred"] == report["counts"]["total"] <= total
    assert not report["fresh"] and not report["missing"] and not report["unexpected"]

    saved = yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert saved["weights"] == str(source_checkpoint)
    assert (saved["backbone"]["norm"], saved["backbone"]["freeze_at"]) == ("frozen_bn", 2)
    assert load_checkpoint(out / "last.pt")["config"]["model"]["backbone"]["norm"] == "frozen_bn"


@pytest.mark.parametrize("key", ["model.weights", "model.backbone.weights"])
def test_a_fine_tuning_run_resumes_after_its_weights_file_is_gone(tmp_path, source_checkpoint, key):
    weights = tmp_path / "start.pt"
    weights.write_bytes(source_checkpoint.read_bytes())
    extra = {"model.weights": "null", key: str(weights)}
    Trainer(finetune_cfg(tmp_path, weights, **extra, **{"train.max_iters": 2}), quiet=True,
            log=lambda *_: None).run()
    weights.unlink()

    messages = []
    Trainer(finetune_cfg(tmp_path, weights, **extra, **{"train.max_iters": 4}), resume=True, quiet=True,
            log=messages.append).run()
    assert any("resumed from" in m and "iteration 2" in m for m in messages)
    assert not any(m.startswith("transferred ") for m in messages)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 4


def test_frozen_layers_without_pretrained_weights_are_warned_about(tmp_path):
    messages = []
    cfg = load_config(None, tiny_overrides(tmp_path, **{"model.backbone.norm": "frozen_bn"}))
    Trainer(cfg, quiet=True, log=messages.append).setup()
    assert any(m.startswith("warning: model.backbone.norm = frozen_bn without pretrained weights") for m in messages)
    assert not (tmp_path / "run" / "transfer.json").exists()
