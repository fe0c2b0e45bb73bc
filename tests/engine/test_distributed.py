"""Multi-process training under torchrun with gloo on the CPU, compared with a single process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detkit.config import load_config
from detkit.engine.trainer import Trainer
from detkit.errors import ConfigError
from detkit.runtime.distributed import DistContext
from detkit.weights.checkpoint import load_checkpoint

from .conftest import tiny_overrides

REPO = Path(__file__).resolve().parents[2]

# FPN levels give every image far more anchors and proposals than are sampled, so each image
# contributes a fixed number of samples and the per-process loss means average to the global mean;
# frozen BatchNorm keeps batch statistics out of it.
DDP_SETTINGS = {
    # fp32: the comparisons below are at float32 rounding, which bf16 (whose rounding depends on how the
    # batch is split over processes) would exceed; precision has its own tests (tests/engine/test_precision.py).
    "train.precision": "fp32",
    "eval.precision": "fp32",
    "model.backbone.features": "fpn",
    "model.backbone.fpn_channels": 16,
    "model.backbone.norm": "frozen_bn",
    "model.anchors.sizes": [[16.0], [32.0], [64.0], [128.0], [256.0]],
    "model.rpn.batch_size_per_image": 64,
    "model.rpn.pre_nms_top_n_train": 100,
    "model.rpn.post_nms_top_n_train": 50,
    "model.roi_head.batch_size_per_image": 16,
    "data.synthetic.num_train": 12,
    "train.batch_size": 4,
    "train.max_iters": 3,
    "train.eval_every": 0,
}


def torchrun(nproc: int, overrides, timeout: int = 900) -> subprocess.CompletedProcess:
    """tools/train.py under torchrun --standalone with nproc processes; asserts it exits 0."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(REPO / "tools" / "train.py"), "--quiet", *overrides]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_local_batch_must_divide_global_batch():
    assert DistContext(rank=1, world_size=2).local_batch(4) == 2
    with pytest.raises(ConfigError, match="train.batch_size"):
        DistContext(rank=0, world_size=2).local_batch(3)


# Learned anchors refined online during a 2-iteration warm-up: every process steps on the boxes of
# the whole global batch, so the anchors equal the single process's.
ONLINE_ANCHORS = {"model.anchors.mode": "learned", "model.anchors.online_warmup": "true",
                  "model.anchors.learned_steps": 20, "train.warmup_iters": 2}


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, ONLINE_ANCHORS], ids=["manual_anchors", "online_learned_anchors"])
def test_two_process_gloo_run_equals_single_process_run(tmp_path, extra):
    ddp_dir, single_dir = tmp_path / "ddp", tmp_path / "single"
    settings = {**DDP_SETTINGS, **extra, "data.synthetic.cache_dir": str(tmp_path / "synthetic")}
    single = load_config(None, tiny_overrides(tmp_path, **settings, **{"output.dir": str(single_dir)}))
    Trainer(single, quiet=True, log=lambda *_: None).run()

    proc = torchrun(2, tiny_overrides(tmp_path, **settings, **{"output.dir": str(ddp_dir)}))
    assert proc.stdout.count("2 per process x 2 process(es) = 4 global") == 1  # rank 0 alone prints

    records = [json.loads(line) for line in (ddp_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["type"] == "train"] == [1, 2, 3]  # written once, by rank 0
    single_ckpt, ddp_ckpt = load_checkpoint(single_dir / "last.pt"), load_checkpoint(ddp_dir / "last.pt")
    torch.testing.assert_close(torch.tensor(ddp_ckpt["anchor_shapes"]), torch.tensor(single_ckpt["anchor_shapes"]),
                               rtol=1e-6, atol=1e-6)
    if extra:
        assert "online refinement over 2 warm-up iterations" in proc.stdout
    a, b = single_ckpt["model"], ddp_ckpt["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)


@pytest.mark.slow
def test_two_process_precise_bn_averages_the_shards_of_both_ranks(tmp_path):
    """With trainable BatchNorm, the statistics in last.pt are the average over both ranks' shards:
    2 global batches of 4 = the first 4 local batches of 2 images, which one process recomputes."""
    from detkit.data.loader import build_loader
    from detkit.evaluation.precise_bn import recompute_bn_stats
    from detkit.weights.trained_model import load_trained_model

    settings = {**DDP_SETTINGS, "model.backbone.norm": "bn", "eval.precise_bn_batches": 2,
                "data.synthetic.cache_dir": str(tmp_path / "synthetic"), "output.dir": str(tmp_path / "ddp")}
    proc = torchrun(2, tiny_overrides(tmp_path, **settings))
    assert "BatchNorm statistics re-estimated over 2 training batches" in proc.stdout

    saved = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    model, cfg, _ = load_trained_model(str(tmp_path / "ddp" / "last.pt"))
    loader = build_loader(cfg, "train", train=False, shuffle=False, batch_size=2)
    assert recompute_bn_stats(model.backbone, lambda b: model.backbone(model.preprocess(b[0])[0]), loader, 4) == 4
    recomputed = model.state_dict()
    keys = [k for k in saved if k.endswith(("running_mean", "running_var"))]
    assert keys
    for key in keys:
        torch.testing.assert_close(saved[key], recomputed[key], rtol=1e-4, atol=1e-5, msg=key)


def test_torchrun_one_process_joins_a_group_and_wraps_ddp(tmp_path):
    """--nproc_per_node 1 still runs in a process group (gloo here; nccl with SyncBatchNorm on CUDA:
    tests/test_cuda.py), with DistributedDataParallel, as a larger run does."""
    settings = {**DDP_SETTINGS, "model.backbone.norm": "bn", "train.max_iters": 2, "eval.precise_bn_batches": 0,
                "data.synthetic.cache_dir": str(tmp_path / "synthetic"), "output.dir": str(tmp_path / "one")}
    proc = torchrun(1, tiny_overrides(tmp_path, **settings), timeout=600)
    assert "4 per process x 1 process(es) = 4 global" in proc.stdout
    ckpt = load_checkpoint(tmp_path / "one" / "last.pt")
    assert ckpt["iteration"] == 2 and not any(k.startswith("module.") for k in ckpt["model"])


def test_sync_bn_in_a_cpu_process_group_is_a_config_error(tiny_cfg, monkeypatch):
    from detkit.engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module.dist, "get_context", lambda: DistContext(in_group=True))
    with pytest.raises(ConfigError, match="'model.backbone.norm' = 'sync_bn'.*no CPU version"):
        Trainer(tiny_cfg(**{"model.backbone.norm": "sync_bn"}), quiet=True, log=lambda *_: None)


def test_fpn_sync_bn_in_a_cpu_process_group_is_a_config_error(tiny_cfg, monkeypatch):
    from detkit.engine import trainer as trainer_module

    monkeypatch.setattr(trainer_module.dist, "get_context", lambda: DistContext(in_group=True))
    cfg = tiny_cfg(**{"model.backbone.features": "fpn", "model.backbone.fpn_channels": 32,
                      "model.anchors.sizes": [[16.0], [32.0], [64.0], [128.0], [256.0]],
                      "model.backbone.fpn_norm": "sync_bn"})
    with pytest.raises(ConfigError, match="'model.backbone.fpn_norm' = 'sync_bn'.*no CPU version"):
        Trainer(cfg, quiet=True, log=lambda *_: None)


@pytest.mark.parametrize("norm, fpn_norm, parts", [
    ("bn", False, []), ("sync_bn", False, ["backbone.body"]), ("sync_bn", True, ["backbone.body", "backbone.fpn"]),
    ("sync_bn", "bn", ["backbone.body"]), ("frozen_bn", "sync_bn", ["backbone.fpn"]), ("bn", True, []),
])
def test_sync_bn_converts_only_the_parts_configured_so(norm, fpn_norm, parts):
    from detkit.runtime.distributed import sync_bn_parts

    cfg = load_config(None, [f"model.backbone.norm={norm}", f"model.backbone.fpn_norm={str(fpn_norm).lower()}"])
    assert sync_bn_parts(cfg) == parts
