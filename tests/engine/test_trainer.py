"""Tests of the training loop: outputs, exact resume, NaN guard, atomic checkpoints, CLI overrides."""

import json
import os

import pytest
import torch
import yaml

from detkit.engine.trainer import Trainer
from detkit.errors import CheckpointError, TrainingError
from detkit.weights import checkpoint as checkpoint_module
from detkit.weights.checkpoint import load_checkpoint, save_checkpoint

from .conftest import tiny_overrides


def test_short_run_writes_every_output(tiny_cfg, tmp_path):
    cfg = tiny_cfg(**{"train.max_iters": 2})
    metrics = Trainer(cfg, quiet=True, log=lambda *_: None).run()
    out = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "eval.json", "detections.json"):
        assert (out / name).is_file(), name
    for plot in ("loss.png", "lr.png", "pr_curves.png", "confusion_matrix.png"):
        assert (out / "plots" / plot).stat().st_size > 0, plot
    assert set(metrics["coco"]) >= {"mAP", "AP50", "AP75"}
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "eval"]
    assert evals and evals[-1]["mAP"] == metrics["coco"]["mAP"]
    assert evals[-1]["per_class_AP"] == {name: v["AP"] for name, v in metrics["per_class"].items()}
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["iteration"] == 2 and ckpt["classes"] == ["circle", "square", "triangle"]
    assert len(ckpt["anchor_shapes"]) == 1 and len(ckpt["anchor_shapes"][0]) == 3
    assert ckpt["config"]["model"]["anchors"]["shapes"] == ckpt["anchor_shapes"]


def _params(path):
    return load_checkpoint(path)["model"]


def test_resume_after_k_iterations_equals_uninterrupted_run(tiny_cfg, tmp_path):
    full = tiny_cfg(**{"output.dir": str(tmp_path / "full"), "train.eval_every": 0})
    Trainer(full, quiet=True, log=lambda *_: None).run()

    part = tiny_cfg(**{"output.dir": str(tmp_path / "part"), "train.eval_every": 0, "train.max_iters": 3})
    Trainer(part, quiet=True, log=lambda *_: None).run()
    assert load_checkpoint(tmp_path / "part" / "last.pt")["iteration"] == 3
    rest = tiny_cfg(**{"output.dir": str(tmp_path / "part"), "train.eval_every": 0})
    Trainer(rest, resume=True, quiet=True, log=lambda *_: None).run()

    a, b = _params(tmp_path / "full" / "last.pt"), _params(tmp_path / "part" / "last.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def _train_iterations(path):
    return [r["iteration"] for r in map(json.loads, path.read_text().splitlines()) if r["type"] == "train"]


def test_resume_drops_the_records_logged_after_the_checkpoint(tiny_cfg, tmp_path):
    full = tiny_cfg(**{"output.dir": str(tmp_path / "full"), "train.eval_every": 0})
    Trainer(full, quiet=True, log=lambda *_: None).run()

    part = tiny_cfg(**{"output.dir": str(tmp_path / "part"), "train.eval_every": 0, "train.max_iters": 3})
    Trainer(part, quiet=True, log=lambda *_: None).run()
    log_path = tmp_path / "part" / "metrics.jsonl"
    # What a run killed after the checkpoint leaves behind: iterations 4 and 5 logged, then a torn line.
    with open(log_path, "a", encoding="utf-8") as f:
        for it in (4, 5):
            f.write(json.dumps({"type": "train", "epoch": 2, "iteration": it, "loss": -1.0}) + "\n")
        f.write('{"type": "train", "epo')
    messages = []
    rest = tiny_cfg(**{"output.dir": str(tmp_path / "part"), "train.eval_every": 0})
    Trainer(rest, resume=True, quiet=True, log=messages.append).run()

    assert any("dropped 3 record(s)" in m and "iteration 3" in m for m in messages), messages
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert all(r.get("loss") != -1.0 for r in records)
    assert _train_iterations(log_path) == _train_iterations(tmp_path / "full" / "metrics.jsonl")


def test_resume_with_a_clean_log_keeps_it_whole(tiny_cfg, tmp_path):
    part = tiny_cfg(**{"train.eval_every": 0, "train.max_iters": 3})
    Trainer(part, quiet=True, log=lambda *_: None).run()
    log_path = tmp_path / "run" / "metrics.jsonl"
    before = log_path.read_text()
    messages = []
    Trainer(tiny_cfg(**{"train.eval_every": 0, "train.max_iters": 3}), resume=True, quiet=True,
            log=messages.append).run()
    assert log_path.read_text().startswith(before)
    assert not any("dropped" in m for m in messages)


ONLINE = {"model.anchors.mode": "learned", "model.anchors.online_warmup": "true", "model.anchors.learned_steps": 20,
          "train.warmup_iters": 5, "train.eval_every": 0}


def test_online_anchor_warmup_refines_then_freezes_and_resumes_exactly(tiny_cfg, tmp_path):
    lines = []
    full = tiny_cfg(**ONLINE, **{"output.dir": str(tmp_path / "full")})
    Trainer(full, quiet=True, log=lines.append).run()
    assert any("refined online on each batch of the first 5 iterations" in line for line in lines), lines
    assert any("online refinement over 5 warm-up iterations" in line for line in lines), lines
    ckpt = load_checkpoint(tmp_path / "full" / "last.pt")
    assert ckpt["online_anchors"] is None  # frozen after the warm-up
    written = yaml.safe_load((tmp_path / "full" / "config.yaml").read_text())["model"]["anchors"]["shapes"]
    assert written == ckpt["anchor_shapes"] == ckpt["config"]["model"]["anchors"]["shapes"]

    # Stopped inside the warm-up (iteration 3 of 5): the checkpoint holds the online fit, and the
    # resumed run ends exactly where the uninterrupted one did.
    part = tiny_cfg(**ONLINE, **{"output.dir": str(tmp_path / "part"), "train.max_iters": 3})
    Trainer(part, quiet=True, log=lambda *_: None).run()
    mid = load_checkpoint(tmp_path / "part" / "last.pt")
    assert mid["online_anchors"]["steps_done"] == 3
    rest = tiny_cfg(**ONLINE, **{"output.dir": str(tmp_path / "part")})
    Trainer(rest, resume=True, quiet=True, log=lambda *_: None).run()
    end = load_checkpoint(tmp_path / "part" / "last.pt")
    assert end["anchor_shapes"] == ckpt["anchor_shapes"]
    for key in ckpt["model"]:
        torch.testing.assert_close(end["model"][key], ckpt["model"][key], rtol=0, atol=0, msg=key)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    cfg = tiny_cfg(**{"train.eval_every": 0})
    trainer = Trainer(cfg, quiet=True, log=lambda *_: None)
    calls = {"n": 0}
    original = Trainer._step

    def poisoned_step(self, images, targets):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2: last.pt of epoch 1 exists
            for p in self.model.parameters():
                p.data.fill_(float("nan"))
        return original(self, images, targets)

    monkeypatch.setattr(Trainer, "_step", poisoned_step)
    with pytest.raises(TrainingError) as info:
        trainer.run()
    message = str(info.value)
    assert "iteration 6" in message and "last.pt" in message
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_interrupted_save_never_truncates(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(3)}, "config": {}, "classes": ["a"], "anchor_shapes": []}, path)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "config": {}, "classes": ["a"], "anchor_shapes": []}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.pt"]


def test_nan_model_is_never_saved(tmp_path):
    with pytest.raises(CheckpointError, match="'w'"):
        save_checkpoint({"model": {"w": torch.tensor([1.0, float("nan")])}}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("content, match", [(b"", "empty"), (b"not a zip at all", "cannot be read")])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_truncated_and_foreign_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint({"model": {"w": torch.ones(1000)}, "config": {}, "classes": ["a"], "anchor_shapes": []}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:-300])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="missing model"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_command_line_overrides_reach_the_components(tmp_path):
    import tools.train as train_tool

    args = tiny_overrides(tmp_path, **{"train.max_iters": 1, "model.roi_head.fc_dim": 48})
    assert train_tool.main(["--quiet", "--seed", "3", *args]) == 0
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["config"]["train"]["seed"] == 3
    fc_weights = [v for k, v in ckpt["model"].items() if v.ndim == 2]
    assert any(w.shape[0] == 48 for w in fc_weights)


def test_resume_without_checkpoint_is_a_clear_error(tiny_cfg):
    with pytest.raises(CheckpointError, match="--resume"):
        Trainer(tiny_cfg(), resume=True, quiet=True, log=lambda *_: None).run()


# The keys of the checkpoints the trainer wrote before its side jobs became hooks (c302da1).
KEYS_BEFORE_HOOKS = {"model", "optimizer", "scheduler", "epoch", "iteration", "rng", "config", "classes",
                     "category_ids", "anchor_shapes", "best", "online_anchors", "detkit_version"}
# Added since (issue 18): the fp16 loss scale and what the precisions resolved to; an old checkpoint lacks both.
KEYS_SINCE_PRECISION = {"grad_scaler", "precision"}


@pytest.mark.parametrize("ema", [False, True])
def test_checkpoints_written_before_the_hooks_still_load_and_resume(tiny_cfg, tmp_path, ema):
    from detkit.deploy.predictor import load_model

    extra = {"train.eval_every": 0, "train.max_iters": 2, "eval.precise_bn_batches": 0,
             **({"train.ema_decay": 0.8} if ema else {})}
    Trainer(tiny_cfg(**extra), quiet=True, log=lambda *_: None).run()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    expected = KEYS_BEFORE_HOOKS | ({"train_model", "ema_updates"} if ema else set())
    assert set(ckpt) == expected | KEYS_SINCE_PRECISION  # the format is otherwise unchanged
    # A checkpoint laid out exactly as the old trainer saved it (plain torch.save of those keys).
    old = {key: ckpt[key] for key in expected}
    torch.save(old, tmp_path / "run" / "last.pt")
    messages = []
    Trainer(tiny_cfg(**{**extra, "train.max_iters": 4}), resume=True, quiet=True, log=messages.append).run()
    assert any("resumed from" in m and "iteration 2" in m for m in messages)
    assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 4
    torch.save(old, tmp_path / "old.pt")
    model = load_model(str(tmp_path / "old.pt"), overrides=["eval.fold_bn=false"], log=lambda *_: None)
    for key, value in model.model.state_dict().items():
        torch.testing.assert_close(value, old["model"][key], rtol=0, atol=0, msg=key)


def test_last_pt_is_written_after_the_epochs_evaluation(tiny_cfg, tmp_path):
    """A kill between the evaluation and last.pt must not lose the evaluation: last.pt comes last and
    already holds the best value the evaluation produced."""
    Trainer(tiny_cfg(**{"train.epochs": 1, "model.roi_head.score_thresh": 0.0}), quiet=True, log=lambda *_: None).run()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    evals = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "eval"]
    assert len(evals) == 1 and ckpt["best"]["value"] == evals[0]["mAP"]


def test_keep_evaluated_writes_the_weights_of_every_evaluation(tiny_cfg, tmp_path):
    """train.keep_evaluated: evaluated/epoch_NNN.pt per evaluation, weights only, and evaluating one
    again gives the number the run logged for that evaluation."""
    from detkit.evaluation.evaluate import evaluate_checkpoint

    cfg = tiny_cfg(**{"train.epochs": 2, "train.eval_every": 1, "train.keep_evaluated": True,
                      "train.ema_decay": 0.9, "eval.precise_bn_batches": 2,
                      "train.precision": "fp32", "eval.precision": "fp32"})  # bf16 passes may differ
    Trainer(cfg, quiet=True, log=lambda *_: None).run()
    out = tmp_path / "run"
    files = sorted(p.name for p in (out / "evaluated").iterdir())
    assert files == ["epoch_001.pt", "epoch_002.pt"]
    first, last = (load_checkpoint(out / "evaluated" / name) for name in files)
    assert "optimizer" not in first and "rng" not in first
    assert first["epoch"] == 1 and last["epoch"] == 2 and first["iteration"] < last["iteration"]
    final = load_checkpoint(out / "last.pt")["model"]
    for key in final:  # the last evaluation's weights are last.pt's (the moving average, precise BN)
        torch.testing.assert_close(last["model"][key], final[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(first["model"][k], last["model"][k]) for k in final if final[k].is_floating_point())
    logged = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["type"] == "eval"]
    again = evaluate_checkpoint(str(out / "evaluated" / "epoch_001.pt"), output_dir=str(tmp_path / "again"),
                                progress=False, log=lambda *_: None)
    assert again["coco"]["mAP"] == pytest.approx(logged[0]["mAP"], abs=1e-9)


def test_without_keep_evaluated_there_is_no_evaluated_folder(tiny_cfg, tmp_path):
    Trainer(tiny_cfg(**{"train.max_iters": 2}), quiet=True, log=lambda *_: None).run()
    assert not (tmp_path / "run" / "evaluated").exists()
