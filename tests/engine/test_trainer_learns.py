"""The Trainer learns: a short, deterministic run reaches an mAP an untrained or broken model does not.

The run (tests/engine/memorise_setup.py, trained once per session by the ``memorised_run`` fixture):
8 synthetic 48-pixel images (circle, square, triangle; 1 to 3 shapes each) resized to 64 pixels, a C4
ResNet-18 from scratch, SGD lr 0.02, 160 steps of batch 4, fp32, scored by the Trainer's own final
evaluation on the same 8 images (memorising them is the learning checked here; the resize makes the
boxes' mapping to and from the network's input count).

Measured on a 2-core CPU (about 13 s a run), the final evaluation of this run with train.seed 0..5:
    trained:                          mAP 0.63 0.56 0.51 0.31 0.57 0.58   AP50 0.93 0.92 0.87 0.76 0.85 0.94
                                      per-class AP50: lowest of the 18 is 0.50
    the same run with train.lr=1e-12, seeds 0..2: mAP 0.0007 0.005 0.003   AP50 0.005 0.019 0.014
                                      per-class AP50: at most 0.054
    broken, seed 0: box decoding returning its anchors / proposals: mAP 0.12 (AP50 0.57);
                    detections not mapped back to the image's size:  mAP 0.003 (AP50 0.015)
The floors sit well below every trained run and well above the untrained and broken ones.
"""

import json
from pathlib import Path

MAP_FLOOR = 0.2
AP50_FLOOR = 0.5


def test_a_short_run_memorises_eight_synthetic_images(memorised_run):
    cfg, metrics = memorised_run
    coco = metrics["coco"]
    assert coco["mAP"] >= MAP_FLOOR, coco
    assert coco["AP50"] >= AP50_FLOOR, coco
    # Every class is learned, not only the easiest one.
    assert all(v["AP50"] >= 0.25 for v in metrics["per_class"].values()), metrics["per_class"]
    # What the run reports is what it wrote.
    written = json.loads((Path(cfg.output.dir) / "eval.json").read_text())
    assert written["coco"] == coco
