"""scripts/ensemble_run.py: members trained one after the other to shares of one budget, then their ensemble."""

import json

import pytest

from detkit.evaluation.evaluate import evaluate_checkpoint
from scripts import ensemble_run
from tests.engine.conftest import tiny_overrides


def test_each_member_gets_an_equal_share_of_what_is_left_after_the_reserve():
    assert ensemble_run.member_budget(81.0, 0.0, 6.0, 2) == 37.5
    assert ensemble_run.member_budget(81.0, 30.0, 6.0, 1) == 45.0  # the first member's unused minutes carry over
    with pytest.raises(ValueError, match="no time left"):
        ensemble_run.member_budget(30.0, 26.0, 6.0, 1)
    with pytest.raises(ValueError, match="members_left"):
        ensemble_run.member_budget(30.0, 0.0, 6.0, 0)


def test_the_last_evaluated_weights_are_the_highest_epochs(tmp_path):
    (tmp_path / "evaluated").mkdir()
    for epoch in (3, 12, 9):
        (tmp_path / "evaluated" / f"epoch_{epoch:03d}.pt").write_bytes(b"")
    assert ensemble_run.last_evaluated(str(tmp_path)).endswith("epoch_012.pt")
    with pytest.raises(FileNotFoundError, match="keep_evaluated"):
        ensemble_run.last_evaluated(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_two_members_train_within_the_budget_and_their_ensemble_is_evaluated(tmp_path):
    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("output.dir")]
    summary = ensemble_run.ensemble_run(_config(tmp_path), str(tmp_path / "ens"), members=2, budget_min=1.2,
                                        reserve_min=0.2, overrides=overrides, log=lambda *_: None)
    first, second = summary["members"]
    assert (first["seed"], second["seed"]) == (0, 1)
    assert first["budget_min"] == pytest.approx(0.5)
    assert second["budget_min"] == pytest.approx(1.0 - first["wall_min"], abs=0.05)
    assert first["weights"] != second["weights"] and first["weights"].endswith(".pt")
    # the second member evaluated once, at its end: one evaluated checkpoint
    assert len(list((tmp_path / "ens" / "member_1" / "evaluated").glob("epoch_*.pt"))) == 1
    written = json.loads((tmp_path / "ens" / "ensemble_run.json").read_text())
    assert written["ensemble"]["coco"] == summary["ensemble"]["coco"]
    # the ensemble evaluated is that of the two members' last evaluated weights
    direct = evaluate_checkpoint([first["weights"], second["weights"]], output_dir=str(tmp_path / "direct"),
                                 progress=False, log=lambda *_: None)
    assert direct["coco"] == summary["ensemble"]["coco"]
    # within the budget, give or take the processes' start-up (a few seconds each) and one tiny epoch
    assert summary["total_min"] < 1.2 + 0.5


def _config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text("data:\n  format: synthetic\n")
    return str(path)
