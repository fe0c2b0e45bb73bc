"""scripts/p1_report.py: the Markdown summary of finished runs matches the runs' own files."""

import json
import shutil

import pytest
import yaml

from detkit.config import load_config
from scripts import p1_report
from tests.engine.conftest import train_tiny_run


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("report"), **{"train.eval_every": 1, "train.seed": 3})


def test_summary_row_matches_eval_json_and_log(finished_run):
    final = json.loads((finished_run / "eval.json").read_text())
    row = p1_report.run_summary(p1_report.load_run(str(finished_run)))
    assert row["mAP"] == final["coco"]["mAP"] and row["AP75"] == final["coco"]["AP75"]
    assert row["per_class"] == {name: v["AP"] for name, v in final["per_class"].items()}
    assert row["seed"] == 3 and row["anchors"] == "manual"
    assert row["img_per_s"] > 0 and row["time_s"] > 0


def test_report_prints_table_epochs_and_evaluations(finished_run, capsys):
    assert p1_report.main([str(finished_run), "--reference", "0.5"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| run")]
    assert table and "vs ref" in table[0] and "AP circle" in table[0]
    assert sum(line.startswith("epoch ") for line in out.splitlines()) == 2
    evals = [line for line in out.splitlines() if "eval @ epoch" in line]
    assert len(evals) == 2 and "circle" in evals[-1]


def test_changes_column_lists_the_settings_that_differ_from_the_base(finished_run, tmp_path, capsys):
    run_config = yaml.safe_load((finished_run / "config.yaml").read_text())
    run_config["model"]["roi_head"]["fc_dim"] = 64
    run_config["model"]["roi_head"]["aligned"] = True
    run_config["train"]["seed"] = 0  # the seed has its own column, never a change
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(run_config))
    base = load_config(str(tmp_path / "base.yaml"))
    assert p1_report.config_changes(p1_report.load_run(str(finished_run))["cfg"], base) == [
        "model.roi_head.aligned=false", "model.roi_head.fc_dim=32"]
    assert p1_report.main([str(finished_run), "--base", str(tmp_path / "base.yaml")]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert "changes" in table[0].split(" | ")
    assert "`model.roi_head.aligned=false`, `model.roi_head.fc_dim=32`" in table[1]


def test_keys_a_run_predates_are_named_under_the_table(finished_run, tmp_path, capsys):
    # A run written before a setting existed: its config.yaml lacks the key, which loads as today's
    # default and so cannot show in the changes column.
    old_run = tmp_path / "old_run"
    shutil.copytree(finished_run, old_run)
    written = yaml.safe_load((old_run / "config.yaml").read_text())
    del written["eval"]["precise_bn_batches"]
    (old_run / "config.yaml").write_text(yaml.safe_dump(written))
    base = str(old_run.parent / "base.yaml")
    (old_run.parent / "base.yaml").write_text((finished_run / "config.yaml").read_text())
    assert p1_report.main([str(finished_run), str(old_run), "--base", base]) == 0
    out = capsys.readouterr().out.splitlines()
    notes = [line for line in out if "predates" in line]
    assert notes == ["- old_run: its config.yaml predates `eval.precise_bn_batches` "
                     "(read as today's defaults in the changes column)"]


def test_compute_time_skips_the_gap_of_a_resume():
    records = [
        {"type": "train", "epoch": 1, "iteration": 1, "time": 900.0},
        {"type": "epoch", "epoch": 1, "iteration": 2, "time": 1000.0, "seconds": 100.0},
        {"type": "eval", "epoch": 1, "iteration": 2, "time": 1050.0},
        # stopped here, resumed a day later
        {"type": "train", "epoch": 2, "iteration": 3, "time": 87_000.0},
        {"type": "epoch", "epoch": 2, "iteration": 4, "time": 87_100.0, "seconds": 110.0},
        {"type": "eval", "epoch": 2, "iteration": 4, "time": 87_130.0},
    ]
    assert p1_report.compute_seconds(records) == pytest.approx(100 + 50 + 110 + 30)


def test_unfinished_run_is_named_in_the_error(tmp_path):
    (tmp_path / "config.yaml").write_text("{}\n")
    with pytest.raises(SystemExit, match=r"missing metrics.jsonl, eval.json"):
        p1_report.load_run(str(tmp_path))
