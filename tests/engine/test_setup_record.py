"""setup.json: what set-up found (data reports, anchors, device), kept in the run folder for its report."""

import json

from detkit.config import load_config
from detkit.engine.trainer import Trainer
from tests.engine.conftest import tiny_overrides, train_tiny_run


def test_setup_record_holds_data_anchors_and_device_and_survives_a_resume(tmp_path):
    run = train_tiny_run(tmp_path, **{"train.epochs": 1, "output.report": False})
    record = json.loads((run / "setup.json").read_text())
    assert record["data"]["classes"] == ["circle", "square", "triangle"]
    assert record["data"]["train"]["images"] == 8 and record["data"]["val"]["images"] == 4
    assert record["data"]["train"]["boxes"] > 0 and "summary" in record["data"]["train"]
    anchors = record["anchors"]
    assert anchors["strides"] == [32] and len(anchors["shapes"][0]) == 3
    assert anchors["metrics"]["num_boxes"] == len(anchors["box_wh"]) > 0  # fewer boxes than the plot's cap
    assert record["device"].startswith("cpu: ") and record["precision"]["train"] in ("bf16", "fp32")
    assert record["resumed"] is False and record["cwd"]
    assert not (run / "report.html").exists()  # output.report=false; and Trainer alone never writes one

    cfg = load_config(None, tiny_overrides(tmp_path, **{"train.epochs": 2}))
    Trainer(cfg, resume=True, quiet=True, log=lambda *_: None).run()
    resumed = json.loads((run / "setup.json").read_text())
    assert resumed["resumed"] is True and resumed["anchors"] == anchors  # not measured again on a resume
