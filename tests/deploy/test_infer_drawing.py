"""What infer draws: each reported box's outline on the image, and nothing away from the boxes; captions
inside the image, sized to it; one colour per class; small images upscaled; the drawing threshold.

A module-scoped run trains the detector of tests/engine/memorise_setup.py on 8 synthetic 48-pixel
images with one shape each (about 13 s), then the infer tool's path (load_trained_model with the
--score-threshold override, prepare_inference, predict_files) runs on those images upscaled 4 times
(192 pixels, so boxes must be mapped from the 64-pixel network input back to the file's size).
Measured (score threshold 0.5): train.seed 0 (the test's): 7 of the 8 images get 1 to 3 detections on
their shape (12 in all, scores 0.57 to 1.00), the image without a shape none, and the pixels held
equal are 83 % of the images with boxes; train.seed 1 and 2: 6 and 7 images, 10 and 12 detections.
The drawings are upscaled to 640 pixels (the longer side), boxes with them; the checks compare them
with the input upscaled alike. The other checks draw on plain images and take milliseconds.
"""

import colorsys
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import detkit.deploy.infer_files as infer_files
from detkit.deploy.infer_files import predict_files
from detkit.engine.trainer import Trainer
from detkit.vis import (
    DEFAULT_DRAW_THRESHOLD,
    MIN_DRAW_SIDE,
    class_colour,
    draw_detections,
    drawing_scale,
    drawing_style,
)
from detkit.weights.trained_model import load_trained_model, prepare_inference
from tests.engine.memorise_setup import memorise_config

UPSCALE = 4
BAND = 2  # pixels either side of a box side in which its outline must show (rounding of the coordinates)
# pixels right of and above (or below, for a box at the top) a box's top-left corner that its "name score"
# caption may cover on the 640-pixel drawing (font 16 px: "triangle 0.99" is about 95 x 22 pixels)
CAPTION = (120, 26)


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
    return {"inputs": inputs, "out": tmp / "out", "names": names, "summary": summary, "detections": detections,
            "predict": lambda out, **kwargs: predict_files(
                model, model_cfg, classes, category_ids, [str(inputs / name) for name in names], output_dir=str(out),
                progress=False, log=lambda *_: None, precision=precision, **kwargs)}


def _upscaled(path):
    """The input image as the drawing's background: upscaled as draw_detections does; and the factor."""
    image = Image.open(path).convert("RGB")
    scale = drawing_scale(*image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR) if scale != 1 else image), scale


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
    """Where drawing may change pixels: within BAND (+1) of each box's outline, and its caption's corner
    (above the box, or under its top side; moved left at the right edge)."""
    allowed = np.zeros(shape, dtype=bool)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    margin = BAND + 1
    for x1, y1, x2, y2 in boxes:
        outer = (xx >= x1 - margin) & (xx <= x2 + margin) & (yy >= y1 - margin) & (yy <= y2 + margin)
        inner = (xx > x1 + margin) & (xx < x2 - margin) & (yy > y1 + margin) & (yy < y2 - margin)
        left = min(x1, shape[1] - CAPTION[0])
        caption = ((xx >= left - margin) & (xx <= x1 + CAPTION[0]) & (yy >= y1 - CAPTION[1])
                   & (yy <= y1 + margin + CAPTION[1]))
        allowed |= (outer & ~inner) | caption
    return allowed


def test_infer_draws_the_reported_boxes_and_nothing_away_from_them(inferred):
    assert inferred["summary"]["processed"] == len(inferred["names"]) == 8
    assert inferred["summary"]["detections"] == len(inferred["detections"]) >= 5
    images_with_boxes, untouched = 0, 0
    for name in inferred["names"]:
        before, scale = _upscaled(inferred["inputs"] / name)
        after = np.asarray(Image.open(inferred["out"] / name).convert("RGB"))
        assert after.shape == before.shape == (MIN_DRAW_SIDE, MIN_DRAW_SIDE, 3), name  # 192 px: drawn at 640
        changed = (after != before).any(axis=2)
        boxes = [tuple(v * scale for v in box) for box in _boxes(inferred["detections"], name)]
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
    assert untouched >= 0.5 * images_with_boxes * MIN_DRAW_SIDE ** 2


# --------------------------------------------------------------------------- the drawing threshold
def test_the_drawing_threshold_draws_fewer_boxes_and_detections_json_keeps_them_all(inferred, tmp_path):
    scores = [d["score"] for d in inferred["detections"]]
    # About half of the boxes are drawn: a threshold halfway between two distinct scores, as detections.json
    # rounds its scores and a threshold equal to one of them could fall either side of the unrounded score.
    ranked = sorted(set(scores))
    threshold = (ranked[len(ranked) // 2 - 1] + ranked[len(ranked) // 2]) / 2
    drawn_counts = []
    real = infer_files.draw_detections

    def spy(image, boxes, labels, found, names, **kwargs):
        drawn_counts.append(sum(s >= kwargs["min_score"] for s in found))
        return real(image, boxes, labels, found, names, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(infer_files, "draw_detections", spy)
        summary = inferred["predict"](tmp_path / "half", draw_threshold=threshold)
    assert summary["detections"] == len(inferred["detections"])  # detections.json: all of them
    assert json.loads((tmp_path / "half" / "detections.json").read_text()) == inferred["detections"]
    assert 0 < sum(drawn_counts) == sum(s >= threshold for s in scores) < len(scores)
    # Above every score, nothing is drawn: each drawing is its input, upscaled.
    inferred["predict"](tmp_path / "none", draw_threshold=1.01)
    for name in inferred["names"]:
        after = np.asarray(Image.open(tmp_path / "none" / name).convert("RGB"))
        np.testing.assert_array_equal(after, _upscaled(inferred["inputs"] / name)[0])
    assert DEFAULT_DRAW_THRESHOLD == 0.3


def test_draw_detections_leaves_out_boxes_below_min_score():
    image = np.zeros((640, 640, 3), np.uint8)
    boxes = np.array([[100, 100, 300, 300], [400, 400, 600, 600]], np.float32)
    drawn = np.asarray(draw_detections(image, boxes, [1, 2], [0.8, 0.2], ["a", "b"], min_score=0.3))
    assert drawn[300:610, 390:610].max() == 0 and drawn[95:305, 95:305].any()
    both = np.asarray(draw_detections(image, boxes, [1, 2], [0.8, 0.2], ["a", "b"]))
    assert both[300:610, 390:610].any()  # without min_score: every box


# --------------------------------------------------------------------------- captions, sizes, colours
WHITE_TEXT_LABEL = 3  # class_colour(3) is dark blue: the caption's text is white


def _text_extent(drawn):
    """(left, top, right, bottom) of the white (caption text) pixels of a drawing on a black image."""
    rows, cols = np.nonzero((np.asarray(drawn) > 200).all(axis=2))
    return cols.min(), rows.min(), cols.max(), rows.max()


def _caption_extent(box, size=(640, 480), caption_name="a rather long class name"):
    image = np.zeros((size[1], size[0], 3), np.uint8)
    names = ["x", "y", caption_name]
    drawn = draw_detections(image, np.array([box], np.float32), [WHITE_TEXT_LABEL], [0.87], names)
    assert drawn.size == size
    return _text_extent(drawn)


@pytest.mark.parametrize("box", [(0, 0, 60, 50), (5, 3, 60, 50), (600, 0, 640, 50), (590, 4, 639, 40),
                                 (600, 440, 640, 480)])
def test_captions_of_boxes_at_the_edges_stay_whole_inside_the_image(box):
    left, top, right, bottom = _caption_extent(box)
    ml, mt, mr, mb = _caption_extent((200, 200, 300, 300))  # in the middle: above the box, nothing cut
    assert (right - left, bottom - top) == (mr - ml, mb - mt), "the caption is cut off"
    assert left >= 0 and top >= 0 and right <= 639 and bottom <= 479
    if box[1] < 20:  # no room above: inside the box, under its top side
        assert top >= box[1] and bottom <= box[3]
    else:
        assert bottom < box[1]
    if box[2] >= 600:  # at the right edge the caption is moved left, not run off
        assert left < box[0]
    else:
        assert abs(left - box[0]) <= 3


def test_font_and_lines_grow_with_the_image():
    small = _caption_extent((200, 200, 300, 300), size=(800, 600))
    large = _caption_extent((600, 600, 900, 900), size=(2400, 1800))
    assert (large[3] - large[1]) >= 2.5 * (small[3] - small[1])  # text height follows the image (3 times larger)
    assert drawing_style(2400, 1800)[0] > drawing_style(800, 600)[0] >= 12
    assert drawing_style(2400, 1800)[1] > drawing_style(800, 600)[1] >= 2


def test_small_images_are_upscaled_for_drawing_and_large_ones_kept():
    small = np.zeros((96, 128, 3), np.uint8)
    drawn = np.asarray(draw_detections(small, np.array([[32, 40, 64, 80]], np.float32), [2], [0.9], ["a", "b"]))
    assert drawn.shape == (480, 640, 3)
    colour = np.array(class_colour(2))
    assert (drawn[220:260, 160] == colour).all(axis=1).all()  # the left side, at 5 x 32 = 160 px
    assert (drawn[220:260, 320] == colour).all(axis=1).all()  # the right side, at 5 x 64 = 320 px
    assert not drawn[220:260, 170:310].any()
    large = np.zeros((700, 1000, 3), np.uint8)
    assert draw_detections(large, np.zeros((0, 4)), [], [], []).size == (1000, 700)
    assert draw_detections(small, np.zeros((0, 4)), [], [], [], min_side=0).size == (128, 96)


def test_twenty_classes_get_distinct_stable_colours():
    colours = [class_colour(k) for k in range(1, 21)]
    assert all(len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in colours)
    closest = min(np.linalg.norm(np.subtract(a, b)) for a, b in itertools.combinations(colours, 2))
    assert closest > 50, closest
    hues = [colorsys.rgb_to_hsv(*(v / 255 for v in c))[0] for c in colours[12:]]
    assert len({round(h, 2) for h in hues}) == 8  # beyond the palette: generated, not repeated
    assert colours == [class_colour(k) for k in range(1, 21)]
    # the same in another process (with another hash seed): stable across runs
    code = "from detkit.vis import class_colour; print([class_colour(k) for k in range(1, 21)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONHASHSEED": "123"})
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == str(colours)


def test_each_box_is_drawn_in_its_class_colour():
    image = np.zeros((640, 640, 3), np.uint8)
    boxes = np.array([[50, 100, 150, 200], [300, 100, 400, 200]], np.float32)
    drawn = np.asarray(draw_detections(image, boxes, [15, 4], [0.9, 0.9], [str(k) for k in range(20)]))
    assert (drawn[150, 50] == class_colour(15)).all() and (drawn[150, 300] == class_colour(4)).all()
