"""detkit/anchors/modes.py, boxes.py and report.py (detkit anchors): data set -> shapes, table, JSON, PNG."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from detkit.anchors.boxes import collect_training_boxes, with_flips
from detkit.anchors.metrics import BoxSet
from detkit.anchors.modes import fit_anchor_shapes
from detkit.anchors.online import build_online_refiner
from detkit.anchors.report import anchor_report
from detkit.anchors.setup import AnchorSetup
from detkit.config import load_config
from detkit.modeling.anchors import resolve_anchor_shapes, shapes_from_sizes_ratios

REPO = Path(__file__).resolve().parents[2]
BCCD = REPO / ".." / "shared" / "data" / "BCCD"
FAST = ["model.anchors.hill_climb_steps=40", "model.anchors.learned_steps=30", "model.anchors.kmeans_restarts=2"]


class FakeDataset:
    """The two things anchor fitting reads from a data set: image_sizes and get_annotation (no images)."""

    def __init__(self, seed=0, num_images=12, size=(300, 400)):
        rng = np.random.default_rng(seed)
        centres = np.array([[24.0, 20.0], [60.0, 45.0], [40.0, 70.0], [110.0, 100.0]])
        self.image_sizes = [size] * num_images
        self.annotations = []
        for _ in range(num_images):
            pick = rng.integers(len(centres), size=15)
            wh = np.exp(np.log(centres[pick]) + 0.1 * rng.standard_normal((15, 2)))
            xy = rng.uniform(0, 1, size=(15, 2)) * (np.array(size[::-1]) - wh)
            self.annotations.append({"boxes": np.concatenate([xy, xy + wh], 1).astype(np.float32),
                                     "labels": np.ones(15, np.int64)})

    def __len__(self):
        return len(self.image_sizes)

    def get_annotation(self, i):
        return self.annotations[i]


def _cfg(*overrides):
    return load_config(None, ["data.min_size=[600]", "data.max_size=800", *FAST, *overrides])


def _setup(*overrides):
    return AnchorSetup.from_config(_cfg(*overrides))


def test_collect_boxes_resizes_every_scale_and_subsamples():
    ds = FakeDataset()
    boxes = collect_training_boxes(ds, _setup())
    assert len(boxes) == 12 * 15 and tuple(boxes.image_sizes[0]) == (600, 800)
    np.testing.assert_allclose(boxes.boxes[:15], ds.annotations[0]["boxes"] * 2, rtol=1e-6)
    assert len(collect_training_boxes(ds, _setup("data.min_size=[300,600]"))) == 2 * 12 * 15
    assert len(collect_training_boxes(ds, _setup("model.anchors.max_fit_boxes=50"))) == 50


def test_with_flips_mirrors_inside_the_image():
    bs = BoxSet.from_images([np.array([[10.0, 20.0, 30.0, 60.0]])], [(100, 200)])
    flipped = with_flips(bs, hflip=True, vflip=True)
    assert {tuple(b) for b in flipped.boxes.tolist()} == {
        (10.0, 20.0, 30.0, 60.0), (170.0, 20.0, 190.0, 60.0), (10.0, 40.0, 30.0, 80.0), (170.0, 40.0, 190.0, 80.0)}
    np.testing.assert_array_equal(with_flips(bs, hflip=False, vflip=False).boxes, bs.boxes)


@pytest.mark.parametrize("mode", ["manual", "kmeans", "learned"])
def test_fit_anchor_shapes_each_mode(mode):
    cfg = _cfg(f"model.anchors.mode={mode}")
    lines = []
    shapes = fit_anchor_shapes(AnchorSetup.from_config(cfg), FakeDataset(), log=lines.append)
    manual = shapes_from_sizes_ratios(cfg.model.anchors.sizes, cfg.model.anchors.ratios)
    assert np.asarray(shapes).shape == (5, 3, 2) and all(isinstance(v, float) for v in np.ravel(shapes).tolist())
    text = "\n".join(lines)
    assert "mBIoU" in text and "R@0.7" in text and "manual" in text
    if mode == "manual":
        assert shapes == manual
    else:
        assert shapes != manual and f"{mode}: adopted" in text


def test_resolve_order_checkpoint_then_configured_then_fit_then_manual():
    given = [[[10.0, 20.0], [30.0, 30.0], [40.0, 20.0]]] * 5
    saved = [[[11.0, 21.0], [31.0, 31.0], [41.0, 21.0]]] * 5
    fitted = [[[12.0, 22.0], [32.0, 32.0], [42.0, 22.0]]] * 5
    a = _cfg("model.anchors.mode=kmeans").model.anchors
    calls = []

    def fit():
        calls.append(1)
        return fitted

    def resolve(**kw):
        return resolve_anchor_shapes(mode=a.mode, sizes=a.sizes, ratios=a.ratios, log=lambda *_: None, **kw)

    assert resolve(checkpoint=saved, configured=given, fit=fit) == saved
    assert resolve(configured=given, fit=fit) == given
    assert calls == []  # a fit runs only when nothing gave shapes
    assert resolve(fit=fit) == fitted and calls == [1]
    lines = []
    manual = resolve_anchor_shapes(mode="kmeans", sizes=a.sizes, ratios=a.ratios, log=lines.append)
    assert manual == shapes_from_sizes_ratios(a.sizes, a.ratios) and "warning" in lines[0]


def test_fit_single_level():
    c5 = _setup("model.backbone.features=c5", "model.anchors.sizes=[[32,64,128]]", "model.anchors.ratios=[1.0]",
                "model.anchors.mode=learned")
    shapes = fit_anchor_shapes(c5, FakeDataset(), log=lambda *_: None)
    assert np.asarray(shapes).shape == (1, 3, 2)


def test_online_refiner_only_for_learned_online():
    ds = FakeDataset()
    shapes = fit_anchor_shapes(_setup(), ds, log=lambda *_: None)
    assert build_online_refiner(_setup("model.anchors.mode=learned", "model.anchors.online_warmup=true"),
                                shapes, ds) is not None
    assert build_online_refiner(_setup("model.anchors.mode=learned"), shapes, ds) is None
    kmeans = _cfg("model.anchors.mode=kmeans")
    kmeans.model.anchors.online_warmup = True  # load_config rejects the pair; the function must too
    assert build_online_refiner(AnchorSetup.from_config(kmeans), shapes, ds) is None


def test_anchor_report_writes_json_and_png(tmp_path):
    report = anchor_report(_cfg(), output_dir=str(tmp_path / "out"), json_path=str(tmp_path / "f.json"),
                           dataset=FakeDataset(), log=lambda *_: None)
    data = json.loads((tmp_path / "f.json").read_text())
    assert data == json.loads((tmp_path / "out" / "anchors.json").read_text()) == json.loads(json.dumps(report))
    assert list(data) == ["manual", "kmeans", "learned"]
    for entry in data.values():
        for key in ("mbiou", "grid_miou", "recall@0.5", "recall@0.7", "below@0.3", "pos_per_gt", "shapes"):
            assert key in entry
        assert np.asarray(entry["shapes"]).shape == (5, 3, 2)
    assert (tmp_path / "out" / "anchors.png").stat().st_size > 1000


def _tool():
    spec = importlib.util.spec_from_file_location("anchors_tool", REPO / "tools" / "anchors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_on_bccd(tmp_path, capsys):
    if not (BCCD / "Annotations").is_dir():
        pytest.skip("../shared/data/BCCD is not present")
    root = BCCD.resolve()
    argv = ["--config", str(REPO / "configs" / "bccd_r18_fpn.yaml"), "--json", str(tmp_path / "a.json"),
            "--output-dir", str(tmp_path / "out"), f"data.train.roots=[{root}]", f"data.val.roots=[{root}]", *FAST]
    assert _tool().main(argv) == 0
    out = capsys.readouterr().out
    assert "R@0.7" in out and "learned anchors" in out and "2804 training boxes" in out
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["kmeans"]["mbiou"] > data["manual"]["mbiou"] and data["learned"]["mbiou"] > data["manual"]["mbiou"]
    assert (tmp_path / "out" / "anchors.png").is_file()


def test_tool_reports_bad_override(capsys):
    assert _tool().main(["model.anchors.nope=1"]) == 1
    assert "model.anchors.nope" in capsys.readouterr().err
