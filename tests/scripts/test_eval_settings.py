"""scripts/eval_settings.py: inference settings of one checkpoint compared on a split."""

import json

import pytest

from detkit.config import load_config
from detkit.engine.trainer import Trainer
from detkit.evaluation.evaluate import evaluate_checkpoint
from scripts import eval_settings
from tests.engine.conftest import tiny_overrides


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("settings")
    cfg = load_config(None, tiny_overrides(tmp, **{"train.epochs": 3, "train.lr": 0.02,
                                                   "train.precision": "fp32", "eval.precision": "fp32"}))
    Trainer(cfg, quiet=True, log=lambda *_: None).run()
    return str(tmp / "run" / "last.pt")


def test_settings_are_evaluated_with_their_overrides(checkpoint, tmp_path):
    settings = [eval_settings.parse_setting(s) for s in (
        "as trained=",
        "soft=model.roi_head.score_thresh=0.001 model.roi_head.nms_method=gaussian",
        "strict=model.roi_head.score_thresh=0.99")]
    rows = eval_settings.compare_settings(checkpoint, settings, log=lambda *_: None)
    assert [r["name"] for r in rows] == ["as trained", "soft", "strict"]
    direct = evaluate_checkpoint(checkpoint, output_dir=str(tmp_path), progress=False, log=lambda *_: None)
    assert rows[0]["mAP"] == pytest.approx(direct["coco"]["mAP"], abs=1e-9)
    assert rows[0]["images"] == direct["num_images"] == 4
    base = len(json.loads((tmp_path / "detections.json").read_text()))
    assert rows[0]["detections"] == base
    # a lower threshold with soft-NMS keeps at least as much; a 0.99 threshold keeps at most as much
    assert rows[1]["detections"] >= base >= rows[2]["detections"]
    assert rows[1]["detections"] > rows[2]["detections"]
    table = eval_settings.markdown_table(rows)
    assert table.count("\n") == 4 and "(checkpoint)" in table and "model.roi_head.nms_method=gaussian" in table


def test_setting_syntax_errors_are_clear(checkpoint, tmp_path, capsys):
    with pytest.raises(ValueError, match="write NAME=OVERRIDES"):
        eval_settings.parse_setting("no equals sign")
    with pytest.raises(ValueError, match="'score' is not key=value"):
        eval_settings.parse_setting("x=score 0.1")
    assert eval_settings.parse_setting("empty=") == ("empty", [])
    assert eval_settings.main(["--checkpoint", checkpoint, "--setting", "=oops"]) == 2
    assert "write NAME=OVERRIDES" in capsys.readouterr().err
    assert eval_settings.main(["--checkpoint", checkpoint, "--setting", "bad=model.roi_head.nms_method=soft"]) == 2
    assert "nms_method" in capsys.readouterr().err
    out = tmp_path / "rows.json"
    assert eval_settings.main(["--checkpoint", checkpoint, "--setting", "a=", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["rows"][0]["name"] == "a"


def test_repeated_checkpoints_compare_the_settings_of_their_ensemble(checkpoint, tmp_path, capsys):
    """--checkpoint twice: each setting evaluates the ensemble, as evaluate_checkpoint does with the list."""
    best = checkpoint.replace("last.pt", "best.pt")
    out = tmp_path / "rows.json"
    assert eval_settings.main(["--checkpoint", checkpoint, "--checkpoint", best, "--setting", "as trained=",
                               "--output", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    direct = evaluate_checkpoint([checkpoint, best], output_dir=str(tmp_path / "direct"), progress=False,
                                 log=lambda *_: None)
    assert row["mAP"] == direct["coco"]["mAP"] and row["AP75"] == direct["coco"]["AP75"]
