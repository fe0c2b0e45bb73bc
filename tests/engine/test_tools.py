"""End-to-end checks of tools/eval.py and tools/infer.py (the shims of `detkit eval` and `detkit infer`)
on a checkpoint trained for two iterations."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import tools.eval as eval_tool
import tools.infer as infer_tool

from .conftest import train_tiny_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("tiny"),
                          **{"train.max_iters": 2, "model.roi_head.score_thresh": 0.0})


def write_images(folder, count, size=(48, 64)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_eval_tool_prints_tables_and_writes_json(trained_run, tmp_path, capsys):
    rc = eval_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--output-dir", str(tmp_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "circle" in out and "triangle" in out
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["num_images"] == 4
    assert isinstance(json.loads((tmp_path / "detections.json").read_text()), list)


def test_eval_tool_train_split_and_bad_split(trained_run, tmp_path, capsys):
    assert eval_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--split", "train",
                           "--output-dir", str(tmp_path), "--quiet"]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["num_images"] == 8
    assert eval_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--split", "test", "--quiet"]) == 1
    assert "data.format 'voc'" in capsys.readouterr().err


def test_infer_skips_corrupt_image_processes_rest_and_fails(trained_run, tmp_path, capsys):
    images = tmp_path / "images"
    write_images(images, 3)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out_dir = tmp_path / "out"
    rc = infer_tool.main(["--checkpoint", str(trained_run / "best.pt"), str(images), "--output-dir", str(out_dir),
                          "--batch-size", "2", "--score-threshold", "0.0", "--quiet"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "broken.jpg" in err
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["img0.png", "img1.png", "img2.png"]
    detections = json.loads((out_dir / "detections.json").read_text())
    assert {d["file_name"] for d in detections} <= {"img0.png", "img1.png", "img2.png"}
    for d in detections:
        x, y, w, h = d["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 64.01 and y + h <= 48.01  # original image coordinates
        assert d["category_id"] in (1, 2, 3)


def test_infer_glob_and_missing_inputs(trained_run, tmp_path):
    images = tmp_path / "images"
    write_images(images, 2)
    out_dir = tmp_path / "out"
    assert infer_tool.main(["--checkpoint", str(trained_run / "best.pt"), str(images / "*.png"),
                            "--output-dir", str(out_dir), "--quiet"]) == 0
    assert len(list(out_dir.glob("*.png"))) == 2
    assert infer_tool.main(["--checkpoint", str(trained_run / "best.pt"), str(tmp_path / "nothing_here"),
                            "--output-dir", str(out_dir), "--quiet"]) == 1


def test_infer_with_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    assert infer_tool.main(["--checkpoint", str(bad), str(tmp_path), "--quiet"]) == 1
    assert "bad.pt" in capsys.readouterr().err


def test_eval_tool_precise_bn_reestimates_the_statistics(trained_run, tmp_path, capsys):
    from detkit.data.formats import build_dataset
    from detkit.evaluation.precise_bn import refresh_detector_bn_stats
    from detkit.weights.checkpoint import load_checkpoint
    from detkit.weights.trained_model import load_trained_model

    rc = eval_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--output-dir", str(tmp_path / "a"),
                         "--quiet", "--precise-bn", "3"])
    assert rc == 0
    assert "BatchNorm statistics re-estimated over 3 training batches" in capsys.readouterr().out
    # The metrics are those of the checkpoint with re-estimated statistics, not of the checkpoint as saved.
    model, cfg, ckpt = load_trained_model(str(trained_run / "last.pt"))
    train_set = build_dataset(cfg, "train", classes=ckpt["classes"])
    assert refresh_detector_bn_stats(model, cfg, train_set, torch.device("cpu"), num_batches=3) == 3
    saved = load_checkpoint(trained_run / "last.pt")["model"]
    moved = [k for k in saved if k.endswith("running_mean") and not torch.allclose(saved[k], model.state_dict()[k])]
    assert moved  # the trainer re-estimated over 4 batches (its default cap: one pass), the tool over 3
    from detkit.evaluation.evaluate import run_evaluation
    from detkit.weights.trained_model import prepare_inference
    precision = prepare_inference(model, cfg, torch.device("cpu"), log=lambda *_: None)  # as the tool: fold, autocast
    expected, _ = run_evaluation(model, build_dataset(cfg, "val", classes=ckpt["classes"]), cfg, torch.device("cpu"),
                                 progress=False, precision=precision)
    got = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert got["coco"] == pytest.approx(expected["coco"])


def test_eval_tool_rejects_a_negative_precise_bn_count(trained_run, tmp_path, capsys):
    assert eval_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--output-dir", str(tmp_path),
                           "--precise-bn", "-1"]) == 2
    assert "--precise-bn -1" in capsys.readouterr().err


def test_infer_precision_and_unfolded_batch_norm_give_the_same_detections(trained_run, tmp_path, capsys,
                                                                          monkeypatch):
    """fp32 with folded BatchNorm (the inference default) equals fp32 unfolded; bf16 runs too."""
    monkeypatch.setenv("DETKIT_CPU_BF16", "1")  # bf16 even on a CPU without it (emulated: slower, same results)
    images = tmp_path / "images"
    write_images(images, 2)
    runs = {"folded": ["--precision", "fp32"], "unfolded": ["--precision", "fp32", "eval.fold_bn=false"],
            "bf16": ["--precision", "bf16"]}
    found = {}
    for name, extra in runs.items():
        out = tmp_path / name
        assert infer_tool.main(["--checkpoint", str(trained_run / "best.pt"), str(images), "--output-dir", str(out),
                                "--score-threshold", "0.0", "--quiet", *extra]) == 0
        found[name] = json.loads((out / "detections.json").read_text())
    a, b = found["folded"], found["unfolded"]
    assert len(a) == len(b) > 0
    for da, db in zip(a, b):
        assert da["category_id"] == db["category_id"] and da["file_name"] == db["file_name"]
        assert da["bbox"] == pytest.approx(db["bbox"], abs=0.05) and da["score"] == pytest.approx(db["score"], abs=1e-3)
    assert found["bf16"]  # runs and finds something; its scores are bf16-rounded, not compared one by one
    assert infer_tool.main(["--checkpoint", str(trained_run / "best.pt"), str(images), "--quiet",
                            "--output-dir", str(tmp_path / "x"), "eval.precision=fp8"]) == 1
    assert "eval.precision" in capsys.readouterr().err


def test_eval_tool_precision_flag(trained_run, tmp_path, capsys):
    a, b = tmp_path / "fp32", tmp_path / "unfolded"
    assert eval_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--output-dir", str(a), "--quiet",
                           "--precision", "fp32"]) == 0
    assert eval_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--output-dir", str(b), "--quiet",
                           "--precision", "fp32", "eval.fold_bn=false"]) == 0
    folded, unfolded = (json.loads((d / "eval.json").read_text())["coco"] for d in (a, b))
    assert folded == pytest.approx(unfolded, abs=1e-3)  # folding BatchNorm changes float rounding only
    with pytest.raises(SystemExit):
        eval_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--precision", "fp8"])
    assert "fp8" in capsys.readouterr().err


def test_eval_tool_takes_several_checkpoints_as_one_ensemble(trained_run, tmp_path, capsys):
    """--checkpoint A --checkpoint B: one evaluation of the two as an ensemble, written to ensemble/ beside A;
    a key=value after --checkpoint stays an override."""
    rc = eval_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--checkpoint", str(trained_run / "best.pt"),
                         "model.roi_head.score_thresh=0.01", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "ensemble of 2 checkpoints" in out and "AP50" in out
    assert json.loads((trained_run / "ensemble" / "eval.json").read_text())["num_images"] == 4


def test_infer_runs_several_checkpoints_as_one_ensemble(trained_run, tmp_path, capsys):
    images = tmp_path / "images"
    write_images(images, 2)
    out_dir = tmp_path / "out"
    rc = infer_tool.main(["--checkpoint", str(trained_run / "last.pt"), "--checkpoint", str(trained_run / "best.pt"),
                          str(images), "--output-dir", str(out_dir), "--quiet"])
    assert rc == 0
    assert "2 image(s) processed" in capsys.readouterr().out
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["img0.png", "img1.png"]
    assert isinstance(json.loads((out_dir / "detections.json").read_text()), list)
