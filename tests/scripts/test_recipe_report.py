"""scripts/recipe_report.py and scripts/train_torchvision_p1.py: the time-to-accuracy curves
of a detkit run (re-evaluated from its kept weights) and of the torchvision reference (as logged)."""

import json
from pathlib import Path

import pytest

from detkit.config import load_config
from detkit.engine.trainer import Trainer
from scripts import recipe_report, train_torchvision_p1
from tests.engine.conftest import tiny_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("recipe")
    cfg = load_config(None, tiny_overrides(tmp, **{"train.epochs": 3, "train.eval_every": 1,
                                                   "train.keep_evaluated": True, "train.lr": 0.02,
                                                   # fp32: bf16 scores may differ between two passes
                                                   "train.precision": "fp32", "eval.precision": "fp32"}))
    logged = []
    Trainer(cfg, quiet=True, log=logged.append).run()
    (tmp / "run.log").write_text("\n".join(logged))
    return tmp / "run"


def test_eval_minutes_count_epochs_and_evaluations_not_gaps():
    records = [{"type": "train", "time": 100.0}, {"type": "epoch", "epoch": 1, "time": 160.0, "seconds": 60.0},
               {"type": "eval", "epoch": 1, "time": 190.0},  # 30 s of evaluation
               # a resumed run: an hour between sessions is not compute time
               {"type": "train", "time": 3790.0}, {"type": "epoch", "epoch": 2, "time": 3850.0, "seconds": 60.0},
               {"type": "eval", "epoch": 2, "time": 3880.0}]
    assert recipe_report.eval_minutes(records) == pytest.approx({1: 1.5, 2: 3.0})


def test_an_evaluated_epoch_logged_after_its_evaluation_counts_before_it():
    """The trainer's order: an epoch's last training record, its evaluation, then its epoch record."""
    records = [{"type": "epoch", "epoch": 1, "time": 60.0, "seconds": 60.0},
               {"type": "train", "time": 120.0}, {"type": "eval", "epoch": 2, "time": 150.0},  # 30 s
               {"type": "epoch", "epoch": 2, "time": 150.0, "seconds": 60.0},
               {"type": "epoch", "epoch": 3, "time": 210.0, "seconds": 60.0},
               {"type": "train", "time": 270.0}, {"type": "eval", "epoch": 4, "time": 282.0},  # 12 s
               {"type": "epoch", "epoch": 4, "time": 282.0, "seconds": 60.0}]
    assert recipe_report.eval_minutes(records) == pytest.approx({2: 2.5, 4: 4.7})


def test_iterations_between_the_last_training_record_and_an_evaluation_count_once():
    """Epochs of 10 iterations (1 s each), training records every 8: the evaluation of epoch 2 follows
    the record of iteration 16, so the gap to it holds 4 s of epoch 2's training and 30 s of evaluation."""
    records = [{"type": "train", "iteration": 8, "time": 8.0},
               {"type": "epoch", "epoch": 1, "iteration": 10, "time": 10.0, "seconds": 10.0},
               {"type": "train", "iteration": 16, "time": 16.0}, {"type": "eval", "epoch": 2, "time": 50.0},
               {"type": "epoch", "epoch": 2, "iteration": 20, "time": 50.0, "seconds": 10.0}]
    assert recipe_report.eval_minutes(records) == pytest.approx({2: 50.0 / 60})


def test_setup_minutes_are_the_wall_time_line_less_the_compute_time(tmp_path):
    records = [{"type": "epoch", "epoch": 1, "time": 160.0, "seconds": 60.0},
               {"type": "eval", "epoch": 1, "time": 190.0}]
    (tmp_path / "run").mkdir()
    assert recipe_report.setup_minutes(str(tmp_path / "run"), records) == 0.0  # no log: nothing added
    (tmp_path / "run.log").write_text("epoch 1/1\nwall time 2.25 min (set-up, training, evaluations)\n")
    assert recipe_report.setup_minutes(str(tmp_path / "run"), records) == pytest.approx(0.75)


def test_curve_re_evaluates_the_kept_weights(kept_run):
    """On the split the run evaluated, the kept weights give back the logged numbers; the set-up time
    comes from the trainer's wall-time line and is added to the compute minutes."""
    curve = recipe_report.run_curve(str(kept_run), "val")
    assert [p["epoch"] for p in curve["points"]] == [1, 2, 3]
    for point in curve["points"]:
        assert point["mAP"] == pytest.approx(point["val_mAP"], abs=1e-9)
    minutes = [p["minutes"] for p in curve["points"]]
    assert minutes == sorted(minutes) and minutes[0] > curve["setup_min"] >= 0
    assert (kept_run / "evaluated" / "val" / "epoch_002.json").is_file()  # cached: a rerun reads it
    table = recipe_report.markdown(curve, "val", target=-1.0)
    assert "| 3 |" in table and "first evaluation at val mAP >= -1.0: epoch 1" in table


def test_report_cli_plots_and_writes_json(kept_run, tmp_path):
    plot, out = tmp_path / "curve.png", tmp_path / "curves.json"
    assert recipe_report.main([str(kept_run), "--split", "val", "--reference", "tv=2:0.5",
                               "--plot", str(plot), "--json", str(out)]) == 0
    assert plot.stat().st_size > 0 and json.loads(out.read_text())[0]["run"] == "run"


def test_json_curves_read_back_and_redraw_without_the_run(kept_run, tmp_path):
    """--json then --from-json: the committed results file alone reprints the same table and redraws."""
    saved = tmp_path / "curves.json"
    assert recipe_report.main([str(kept_run), "--split", "val", "--json", str(saved)]) == 0
    curves = recipe_report.load_curves(str(saved))
    assert curves == json.loads(saved.read_text())
    assert recipe_report.markdown(curves[0], "val", 0.0) == recipe_report.markdown(
        recipe_report.run_curve(str(kept_run), "val"), "val", 0.0)
    plot = tmp_path / "again.png"
    assert recipe_report.main(["--from-json", str(saved), "--split", "val", "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 0


def test_from_json_fills_optional_keys_and_names_what_a_bad_file_lacks(tmp_path):
    minimal = tmp_path / "minimal.json"
    minimal.write_text(json.dumps([{"run": "tv", "setup_min": 0.5, "reference": True,
                                    "points": [{"epoch": 2, "minutes": 9.0, "mAP": 0.4, "AP50": 0.8, "AP75": 0.3}]}]))
    point = recipe_report.load_curves(str(minimal))[0]["points"][0]
    assert point["val_mAP"] is None and point["per_class"] == {}
    assert "| 2 | 9.0 |  | 0.400 |" in recipe_report.markdown(recipe_report.load_curves(str(minimal))[0], "test", None)
    cases = {"not json {": "cannot read it as JSON", '{"run": "x"}': "expected a list of curves",
             '[{"run": "x", "points": []}]': "curve 0 lacks setup_min",
             '[{"run": "x", "setup_min": 0, "points": [{"epoch": 1, "minutes": 2}]}]': "'x' lacks mAP, AP50, AP75"}
    for text, message in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(SystemExit, match=message) as raised:
            recipe_report.load_curves(str(bad))
        assert str(bad) in str(raised.value)
    with pytest.raises(SystemExit):  # nothing to report: argparse's usage error
        recipe_report.main(["--split", "test"])


def test_run_without_kept_weights_is_a_clear_error(tmp_path):
    cfg = load_config(None, tiny_overrides(tmp_path, **{"train.max_iters": 2}))
    Trainer(cfg, quiet=True, log=lambda *_: None).run()
    with pytest.raises(SystemExit, match="keep_evaluated"):
        recipe_report.run_curve(str(tmp_path / "run"), "val")


def test_torchvision_reference_trains_logs_and_is_drawn(tmp_path):
    out = tmp_path / "tv"
    overrides = tiny_overrides(tmp_path, **{"train.epochs": 2, "train.eval_every": 1, "output.dir": str(out)})
    metrics = train_torchvision_p1.train(load_config(None, overrides), str(out), log=lambda *_: None)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2] and evals[-1]["mAP"] == metrics["coco"]["mAP"]
    assert json.loads((out / "eval.json").read_text())["coco"]["mAP"] == metrics["coco"]["mAP"]
    assert sum(r["type"] == "epoch" for r in records) == 2
    curve = recipe_report.logged_curve(str(out))
    assert [p["epoch"] for p in curve["points"]] == [1, 2] and curve["reference"] and curve["run"] == "tv"
    assert recipe_report.logged_curve(f"torchvision P1={out}")["run"] == "torchvision P1"


def test_data_from_takes_the_source_and_keeps_p1_resize_and_augmentation():
    p1 = load_config(str(CONFIGS / "bccd_r18_fpn.yaml"))
    recipe = load_config(str(CONFIGS / "bccd_recipe.yaml"), ["data.val.splits=[holdout]", "data.classes=[WBC]"])
    cfg = train_torchvision_p1.with_data_source(load_config(str(CONFIGS / "bccd_r18_fpn.yaml")), recipe)
    assert cfg.data.val.splits == ["holdout"] and cfg.data.classes == ["WBC"]
    assert cfg.data.train.roots == recipe.data.train.roots
    assert cfg.data.min_size == p1.data.min_size == [320] and cfg.data.max_size == 427
    assert cfg.data.augment == p1.data.augment and cfg.train == p1.train


def test_reference_runs_get_styles_of_their_own():
    """Two reference runs in one plot (a recipe and an earlier one) must not share marker and shade."""
    first, second = recipe_report.reference_style(0), recipe_report.reference_style(1)
    assert first["linestyle"] == second["linestyle"] == "--"
    assert (first["marker"], first["color"]) != (second["marker"], second["color"])
