"""What infer draws: each reported box's outline on the image, and nothing away from the boxes.

A module-scoped run trains the detector of tests/engine/memorise_setup.py on 8 synthetic 48-pixel
images with one shape each (about 13 s), then the infer tool's path (load_trained_model with the
--score-threshold override, prepare_inference, predict_files) runs on those images upscaled 4 times
(192 pixels, so boxes must be mapped from the 64-pixel network input back to the file's size).
Measured (score threshold 0.5): train.seed 0 (the test's): 7 of the 8 images get 1 to 3 detections on
their shape (12 in all, scores 0.57 to 1.00), the image without a shape none, and the pixels held
equal are 83 % of the images with boxes; train.seed 1 and 2: 6 and 7 images, 10 and 12 detections.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detkit.deploy.infer_files import predict_files
from detkit.engine.trainer import Trainer
from detkit.weights.trained_model import load_trained_model, prepare_inference
from tests.engine.memorise_setup import memorise_config

UPSCALE = 4
BAND = 2  # pixels either side of a box side in which its outline must show (rounding of the coordinates)
CAPTION = (110, 24)  # pixels right of and above a box's top-left corner that its "name score" caption may cover


@pytest.fixture(scope="module")
def inferred(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("infer_drawing")
    cfg = memorise_config(tmp, max_objects=1)
    Trainer(cfg, quiet=True, log=lambda *_: None).run()
    inputs = tmp / "inputs"
    inputs.mkdir()
    images = sorted(Path(cfg.data.train.img_dir).glob("*.png"))
    names = [path.name for path in images]
    for path, name in zip(images, names):
        small = np.asarray(Image.open(path).convert("RGB"))
        Image.fromarray(small.repeat(UPSCALE, axis=0).repeat(UPSCALE, axis=1)).save(inputs / name)
    model, model_cfg, ckpt = load_trained_model(str(tmp / "run" / "last.pt"),
                                                overrides=["model.roi_head.score_thresh=0.5"])
    precision = prepare_inference(model, model_cfg, torch.device("cpu"), log=lambda *_: None)
    classes = ckpt["classes"]
    category_ids = ckpt.get("category_ids") or list(range(1, len(classes) + 1))  # as tools/infer.py
    summary = predict_files(model, model_cfg, classes, category_ids,
                            [str(inputs / name) for name in names], output_dir=str(tmp / "out"), progress=False,
                            log=lambda *_: None, precision=precision)
    detections = json.loads((tmp / "out" / "detections.json").read_text())
    return {"inputs": inputs, "out": tmp / "out", "names": names, "summary": summary, "detections": detections}


def _boxes(detections, name):
    return [(x, y, x + w, y + h) for x, y, w, h in (d["bbox"] for d in detections if d["file_name"] == name)]


def _outline_shows(changed, box):
    """For each side of the box inside the image, the share of positions along it where a pixel within
    BAND of the side changed. A side on the right or bottom border (a box clipped to the image ends
    at its width or height) lies just outside the pixels, where nothing can be drawn: it is left out."""
    height, width = changed.shape
    x1, y1, x2, y2 = box
    cols = np.arange(int(np.ceil(x1)) + 1, int(np.floor(x2)))
    rows = np.arange(int(np.ceil(y1)) + 1, int(np.floor(y2)))
    shares = []
    for y in (y1, y2):  # top, bottom: every column between the corners
        if y <= height - 1:
            band = changed[max(0, int(y) - BAND):min(height, int(y) + BAND + 1)][:, cols]
            shares.append(band.any(axis=0).mean())
    for x in (x1, x2):  # left, right: every row between the corners
        if x <= width - 1:
            band = changed[rows][:, max(0, int(x) - BAND):min(width, int(x) + BAND + 1)]
            shares.append(band.any(axis=1).mean())
    assert len(shares) >= 2, box  # the left and top sides are inside the image
    return shares


def _may_change(shape, boxes):
    """Where drawing may change pixels: within BAND (+1) of each box's outline, and its caption's corner."""
    allowed = np.zeros(shape, dtype=bool)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    margin = BAND + 1
    for x1, y1, x2, y2 in boxes:
        outer = (xx >= x1 - margin) & (xx <= x2 + margin) & (yy >= y1 - margin) & (yy <= y2 + margin)
        inner = (xx > x1 + margin) & (xx < x2 - margin) & (yy > y1 + margin) & (yy < y2 - margin)
        caption = (xx >= x1 - margin) & (xx <= x1 + CAPTION[0]) & (yy >= y1 - CAPTION[1]) & (yy <= y1 + margin + 16)
        allowed |= (outer & ~inner) | caption
    return allowed


def test_infer_draws_the_reported_boxes_and_nothing_away_from_them(inferred):
    assert inferred["summary"]["processed"] == len(inferred["names"]) == 8
    assert inferred["summary"]["detections"] == len(inferred["detections"]) >= 5
    images_with_boxes, untouched = 0, 0
    for name in inferred["names"]:
        before = np.asarray(Image.open(inferred["inputs"] / name).convert("RGB"))
        after = np.asarray(Image.open(inferred["out"] / name).convert("RGB"))
        assert after.shape == before.shape, name
        changed = (after != before).any(axis=2)
        boxes = _boxes(inferred["detections"], name)
        if not boxes:
            assert not changed.any(), f"{name}: no detection, yet pixels changed"
            continue
        images_with_boxes += 1
        for box in boxes:
            assert min(_outline_shows(changed, box)) == 1.0, (name, box, _outline_shows(changed, box))
        still = ~_may_change(changed.shape, boxes)
        assert not changed[still].any(), (name, boxes, np.argwhere(changed & still)[:5].tolist())
        untouched += int(still.sum())
    assert images_with_boxes >= 5
    # The pixels held equal are most of the images with boxes: inside the boxes and well away from them.
    assert untouched >= 0.5 * images_with_boxes * (48 * UPSCALE) ** 2
