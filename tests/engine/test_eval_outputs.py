"""Evaluating a checkpoint (what tools/eval.py does): its files hold what it scored, and
weights="train_model" (eval --trained-weights) evaluates the trained weights, not their moving average.

One module-scoped run (about 15 s) trains the detector of tests/engine/memorise_setup.py (8 synthetic
48-pixel images evaluated at 64 pixels, 160 steps) with a moving average of its weights, so that the
checkpoint holds two different models ("model": the average, "train_model": the trained weights)
whose metrics are far from zero. Measured: model mAP 0.43, AP50 0.87, 93 detections; train_model
mAP 0.60, AP50 0.92, 61 detections; pycocotools on detections.json gave eval.json's 12 numbers and
per-class AP exactly (differences 0.0; at other test sizes up to 6e-17, hence the 1e-6 tolerance).
"""

import json

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detkit.engine.trainer import Trainer
from detkit.errors import CheckpointError, ConfigError
from detkit.evaluation.evaluate import evaluate_checkpoint
from detkit.weights.checkpoint import load_checkpoint, save_checkpoint

from .memorise_setup import memorise_config

# COCOeval's stats, in its order, under the names eval.json gives them.
STAT_NAMES = ("mAP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ema_run")
    cfg = memorise_config(tmp, **{"train.ema_decay": 0.99, "train.ema_tau": 10.0})
    Trainer(cfg, quiet=True, log=lambda *_: None).run()
    return {"checkpoint": tmp / "run" / "last.pt", "ann_file": cfg.data.val.ann_file}


def _evaluate(checkpoint, out, **kwargs):
    metrics = evaluate_checkpoint(str(checkpoint), output_dir=str(out), progress=False, log=lambda *_: None,
                                  **kwargs)
    written = json.loads((out / "eval.json").read_text())
    detections = json.loads((out / "detections.json").read_text())
    return metrics, written, detections


def _rescore(ann_file, detections):
    """COCOeval (pycocotools) of detections.json against the split's own COCO JSON file."""
    gt = COCO(ann_file)
    dt = gt.loadRes([{k: d[k] for k in ("image_id", "category_id", "bbox", "score")} for d in detections])
    evaluator = COCOeval(gt, dt, "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    # -1 = no ground truth in that area range (here: no medium or large objects); eval.json reports 0.
    coco = {name: max(float(v), 0.0) for name, v in zip(STAT_NAMES, evaluator.stats)}
    per_class = {}
    precision = evaluator.eval["precision"]  # (IoU, recall, category, area, max detections)
    for k, cat_id in enumerate(evaluator.params.catIds):
        p, p50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        per_class[gt.cats[cat_id]["name"]] = {"AP": float(p[p > -1].mean()), "AP50": float(p50[p50 > -1].mean())}
    return coco, per_class


def test_eval_json_holds_the_scores_of_detections_json(ema_run, tmp_path):
    metrics, written, detections = _evaluate(ema_run["checkpoint"], tmp_path)
    assert written["coco"] == metrics["coco"] and written["per_class"] == metrics["per_class"]
    assert written["num_detections"] == len(detections) > 0
    assert written["coco"]["mAP"] > 0.2  # a model that detects: the comparison below is not 0 against 0

    # Each detection names its image as the split's JSON does.
    truth = json.loads(open(ema_run["ann_file"]).read())
    names = {image["id"]: image["file_name"] for image in truth["images"]}
    assert all(d["file_name"] == names[d["image_id"]] for d in detections)
    assert {d["category_id"] for d in detections} <= {c["id"] for c in truth["categories"]}

    coco, per_class = _rescore(ema_run["ann_file"], detections)
    assert written["coco"].keys() == coco.keys()
    for name in STAT_NAMES:
        assert written["coco"][name] == pytest.approx(coco[name], abs=1e-6), name
    assert written["per_class"].keys() == per_class.keys()
    for name, values in per_class.items():
        assert written["per_class"][name]["AP"] == pytest.approx(values["AP"], abs=1e-6), name
        assert written["per_class"][name]["AP50"] == pytest.approx(values["AP50"], abs=1e-6), name


def test_trained_weights_evaluate_as_a_model_built_from_them(ema_run, tmp_path):
    ckpt = load_checkpoint(ema_run["checkpoint"])
    assert set(ckpt) >= {"model", "train_model"}
    # The same checkpoint with the trained weights as its only weights, as a run without the average saves.
    plain = {k: v for k, v in ckpt.items() if k != "train_model"}
    plain["model"] = ckpt["train_model"]
    save_checkpoint(plain, tmp_path / "trained_only.pt")

    trained, trained_file, trained_detections = _evaluate(ema_run["checkpoint"], tmp_path / "trained",
                                                          weights="train_model")
    rebuilt, rebuilt_file, rebuilt_detections = _evaluate(tmp_path / "trained_only.pt", tmp_path / "rebuilt")
    average, average_file, average_detections = _evaluate(ema_run["checkpoint"], tmp_path / "average")

    assert trained_detections == rebuilt_detections and len(trained_detections) > 0
    for key in ("coco", "per_class", "voc", "num_detections", "confusion_matrix"):
        assert trained_file[key] == rebuilt_file[key], key
    assert trained["coco"] == rebuilt["coco"]
    assert trained["coco"]["mAP"] > 0.2

    # ... and not as the moving average, which the default evaluation scores.
    assert average_detections != trained_detections
    assert average_file["coco"] != trained_file["coco"]
    assert average["coco"]["mAP"] > 0.2


def _trained_only(ema_run, path, **changes):
    """The run's trained weights as a checkpoint of their own (a second model of the same classes)."""
    ckpt = load_checkpoint(ema_run["checkpoint"])
    plain = {k: v for k, v in ckpt.items() if k != "train_model"}
    plain.update(model=ckpt["train_model"], **changes)
    save_checkpoint(plain, path)
    return path


def test_several_checkpoints_evaluate_as_one_ensemble(ema_run, tmp_path):
    """The moving average and the trained weights, two models of one run, as an ensemble: scored as its
    own detections (pycocotools agrees), and neither member's."""
    second = _trained_only(ema_run, tmp_path / "trained_only.pt")
    ensemble, ensemble_file, ensemble_detections = _evaluate_many([ema_run["checkpoint"], second], tmp_path / "ens")
    _, _, average_detections = _evaluate(ema_run["checkpoint"], tmp_path / "average")
    _, _, trained_detections = _evaluate(second, tmp_path / "trained")
    assert ensemble["coco"]["mAP"] > 0.2
    assert ensemble_detections not in (average_detections, trained_detections)
    coco, _ = _rescore(ema_run["ann_file"], ensemble_detections)
    for name in STAT_NAMES:
        assert ensemble_file["coco"][name] == pytest.approx(coco[name], abs=1e-6), name


def _evaluate_many(checkpoints, out):
    metrics = evaluate_checkpoint([str(c) for c in checkpoints], output_dir=str(out), progress=False,
                                  log=lambda *_: None)
    return metrics, json.loads((out / "eval.json").read_text()), json.loads((out / "detections.json").read_text())


def test_an_ensemble_refuses_checkpoints_of_other_classes_by_name(ema_run, tmp_path):
    classes = list(load_checkpoint(ema_run["checkpoint"])["classes"])
    renamed = _trained_only(ema_run, tmp_path / "renamed.pt", classes=classes[::-1])
    with pytest.raises(CheckpointError, match=r"renamed\.pt' detects the classes .* same classes in the same order"):
        evaluate_checkpoint([str(ema_run["checkpoint"]), str(renamed)], progress=False, log=lambda *_: None)
    with pytest.raises(CheckpointError, match="given twice"):
        evaluate_checkpoint([str(renamed), str(renamed)], progress=False, log=lambda *_: None)
    with pytest.raises(ConfigError, match="precise-bn"):
        evaluate_checkpoint([str(ema_run["checkpoint"]), str(renamed)], precise_bn_batches=2, progress=False,
                            log=lambda *_: None)
