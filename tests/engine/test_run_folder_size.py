"""A run folder a laptop can keep (issue 40): best.pt holds the evaluated weights and what eval, infer,
export and model.weights read, without the optimizer state or the raw trained weights; last.pt stays
the full checkpoint --resume (and extending a run) needs; the run's closing lines give the folder's size.

One module-scoped tiny run (tests/engine/conftest.py) with a moving average, so that last.pt holds two
copies of the weights plus the SGD momentum. Measured on it: best.pt 55 MiB, last.pt 164 MiB (110 MiB
without the moving average; best.pt the same), the folder 219 MiB.
"""

import json
import re
import shutil

import pytest
import torch

import detkit.cli
from detkit.config import load_config
from detkit.deploy.predictor import load_model
from detkit.engine.hooks.checkpoints import WEIGHTS_KEYS
from detkit.engine.run_folder import format_size, run_folder_summary
from detkit.engine.trainer import Trainer
from detkit.evaluation.evaluate import evaluate_checkpoint
from detkit.weights.checkpoint import load_checkpoint

from .conftest import tiny_overrides

# The entries only a resume reads: none of them may be in best.pt.
RESUME_ONLY = {"optimizer", "scheduler", "grad_scaler", "rng", "train_model", "ema_updates"}
RUN = {"train.epochs": 2, "train.eval_every": 1, "train.ema_decay": 0.9, "eval.precise_bn_batches": 1,
       "train.precision": "fp32", "eval.precision": "fp32", "output.report": False, "output.plots": False}


def _cfg(tmp, **extra):
    return load_config(None, tiny_overrides(tmp, **{**RUN, **extra}))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("size_run")
    messages = []
    Trainer(_cfg(tmp), quiet=True, log=messages.append).run()
    return {"tmp": tmp, "dir": tmp / "run", "messages": messages}


def test_best_pt_keeps_the_evaluated_weights_alone_and_last_pt_everything(run):
    best, last = load_checkpoint(run["dir"] / "best.pt"), load_checkpoint(run["dir"] / "last.pt")
    assert set(best) <= set(WEIGHTS_KEYS) | {"detkit_version"}
    assert not RESUME_ONLY & set(best), sorted(best)
    assert {"model", "config", "classes", "category_ids", "anchor_shapes", "epoch", "iteration", "precision",
            "best"} <= set(best)
    assert RESUME_ONLY <= set(last)  # the moving-average run's full checkpoint
    assert best["best"]["metric"] == "mAP" and best["best"]["value"] is not None
    size_best, size_last = ((run["dir"] / name).stat().st_size for name in ("best.pt", "last.pt"))
    # last.pt: the average, the trained weights and the SGD momentum; best.pt: the average alone.
    assert size_best < 0.45 * size_last, (size_best, size_last)


def test_best_pt_is_the_best_evaluation_and_detkit_eval_scores_it(run, tmp_path, capsys):
    logged = [r for r in map(json.loads, (run["dir"] / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "eval"]
    assert len(logged) == 2
    again = evaluate_checkpoint(str(run["dir"] / "best.pt"), output_dir=str(tmp_path / "again"), progress=False,
                                log=lambda *_: None)
    assert again["coco"]["mAP"] == pytest.approx(max(r["mAP"] for r in logged), abs=1e-9)
    # `detkit eval --checkpoint best.pt`, and --trained-weights: a clear error that names last.pt.
    out = tmp_path / "cli"
    assert detkit.cli.main(["eval", "--checkpoint", str(run["dir"] / "best.pt"), "--output-dir", str(out),
                            "--quiet"]) == 0
    assert json.loads((out / "eval.json").read_text())["coco"]["mAP"] == again["coco"]["mAP"]
    capsys.readouterr()
    assert detkit.cli.main(["eval", "--checkpoint", str(run["dir"] / "best.pt"), "--trained-weights",
                            "--output-dir", str(out), "--quiet"]) == 1
    assert "last.pt" in capsys.readouterr().err


def test_best_pt_loads_and_predicts(run):
    model = load_model(str(run["dir"] / "best.pt"), overrides=["model.roi_head.score_thresh=0.0"],
                       log=lambda *_: None)
    best = load_checkpoint(run["dir"] / "best.pt")
    assert model.classes == best["classes"]
    image = (torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy()
    result = model.predict(image)
    assert result["boxes"].shape[1:] == (4,) and len(result["scores"]) == len(result["labels"]) > 0


def test_fine_tuning_starts_from_best_pt(run, tmp_path):
    trainer = Trainer(_cfg(tmp_path, **{"model.weights": str(run["dir"] / "best.pt"), "train.epochs": 1,
                                        "train.max_iters": 1, "train.ema_decay": "null",
                                        "eval.precise_bn_batches": 0}),
                      quiet=True, log=lambda *_: None)
    trainer.run()
    report = trainer.transfer_report
    assert report is not None and not report.fresh and not report.missing and not report.unexpected
    assert len(report.transferred) == report.total > 0
    assert (tmp_path / "run" / "transfer.json").is_file()


def test_resume_and_extend_from_last_pt(run, tmp_path):
    folder = tmp_path / "extended"
    shutil.copytree(run["dir"], folder)
    done = load_checkpoint(folder / "last.pt")["iteration"]
    messages = []
    Trainer(_cfg(tmp_path, **{"train.epochs": 3, "output.dir": str(folder)}), resume=True, quiet=True,
            log=messages.append).run()
    assert any("resumed from" in m and f"iteration {done}" in m for m in messages), messages
    last = load_checkpoint(folder / "last.pt")
    assert last["epoch"] == 3 and last["iteration"] == done * 3 // 2
    assert not RESUME_ONLY & set(load_checkpoint(folder / "best.pt"))


def test_the_closing_summary_gives_the_run_folder_size(run):
    line = next(m for m in run["messages"] if m.startswith("run folder "))
    match = re.fullmatch(r"run folder (.+): ([0-9.]+ [KMG]iB) \(best\.pt ([0-9.]+ [KMG]iB), "
                         r"last\.pt ([0-9.]+ [KMG]iB)\)", line)
    assert match and match.group(1) == str(run["dir"]), line
    sizes = {name: (run["dir"] / name).stat().st_size for name in ("best.pt", "last.pt")}
    assert match.group(3) == format_size(sizes["best.pt"]) and match.group(4) == format_size(sizes["last.pt"])


def test_run_folder_summary_counts_every_file(tmp_path):
    (tmp_path / "best.pt").write_bytes(b"0" * 3 * 2**20)
    (tmp_path / "last.pt").write_bytes(b"0" * 9 * 2**20)
    (tmp_path / "evaluated").mkdir()
    (tmp_path / "evaluated" / "epoch_001.pt").write_bytes(b"0" * 2**19)
    (tmp_path / "metrics.jsonl").write_bytes(b"0" * 2**19)
    assert run_folder_summary(str(tmp_path)) == (f"run folder {tmp_path}: 13 MiB (best.pt 3.0 MiB, last.pt 9.0 MiB, "
                                                 f"evaluated/ 512 KiB)")
    assert format_size(312 * 2**20) == "312 MiB" and format_size(int(1.1 * 2**30)) == "1.10 GiB"
    assert run_folder_summary(str(tmp_path / "missing")) == f"run folder {tmp_path / 'missing'}: 0 KiB"
