"""Export to ONNX and TorchScript: the exported graph against the eager detector, the resize, errors, tools.

Small detectors trained for a few iterations on the synthetic set (one C5 level and a five-level FPN,
manual / k-means / learned anchors), exported to both formats and compared with the eager model on
images of several sizes and aspect ratios.
"""

import json
import math
import sys

import cv2
import numpy as np
import pytest
import torch

import tools.export as export_tool
import tools.infer as infer_tool
from detkit.config import load_config
from detkit.data.transforms import resize_scale, resized_size
from detkit.deploy.export import build_export_model, export_checkpoint
from detkit.deploy.export_graph import (
    cv2_linear_resize,
    describe_unexportable,
    resize_for_detector,
    unexportable_settings,
)
from detkit.deploy.export_verify import Tolerances, compare_detections
from detkit.deploy.exported_model import load_exported, require_onnx
from detkit.engine.trainer import Trainer
from detkit.errors import CheckpointError, ExportError

from .conftest import tiny_overrides

# Score threshold 0 for the FPN detectors: after 6 iterations their class scores can all lie under the
# default 0.05 (on an AVX2 CPU the learned-anchor one peaked at 0.001-0.012 on every image), and the
# exported graph must be compared on detections, not on none.
FPN = {"model.backbone.features": "fpn", "model.backbone.fpn_channels": 32,
       "model.anchors.sizes": [[8.0], [16.0], [32.0], [64.0], [128.0]], "model.anchors.ratios": [0.5, 1.0, 2.0],
       "data.min_size": [96], "data.max_size": 128, "model.roi_head.score_thresh": 0.0}
VARIANTS = {
    "c5_manual": {},
    "fpn_kmeans": {**FPN, "model.anchors.mode": "kmeans"},
    "fpn_learned_aligned": {**FPN, "model.anchors.mode": "learned", "model.anchors.learned_steps": 20,
                            "model.roi_head.aligned": True},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """name -> best.pt of a detector trained for 6 iterations (trained once per module, on demand)."""
    runs = {}

    def get(name):
        if name not in runs:
            tmp = tmp_path_factory.mktemp(name)
            extra = {"train.max_iters": 6, "train.lr": 0.02, **VARIANTS[name]}
            Trainer(load_config(None, tiny_overrides(tmp, **extra)), quiet=True, log=lambda *_: None).run()
            runs[name] = tmp / "run" / "best.pt"
        return runs[name]
    return get


def images_of_several_shapes():
    """Synthetic-looking images (bright shapes on noise): landscape, portrait, odd sizes, tiny, large."""
    rng = np.random.default_rng(3)
    out = []
    for h, w in [(64, 64), (48, 80), (90, 50), (61, 47), (17, 33), (200, 150)]:
        img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for _ in range(3):
            y, x = rng.integers(0, max(1, h - 10)), rng.integers(0, max(1, w - 10))
            colour = [int(c) for c in rng.integers(120, 255, 3)]
            cv2.circle(img, (int(x) + 5, int(y) + 5), int(rng.integers(4, 12)), colour, -1)
        out.append(img)
    return out


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exported_model_matches_eager_at_every_size(trained, variant, fmt, tmp_path):
    ckpt = trained(variant)
    output = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    paths = []
    for i, img in enumerate(images_of_several_shapes()):
        paths.append(str(tmp_path / f"img{i}.png"))
        cv2.imwrite(paths[-1], cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    report = export_checkpoint(str(ckpt), fmt, str(output), verify_images=paths, log=lambda *_: None)
    assert report["passed"], report["images"]
    assert json.loads((tmp_path / (output.name + ".verify.json")).read_text())["passed"] is True
    # the images given and three crops of the first one
    assert len(report["images"]) == len(paths) + 3

    predictor, _, _ = build_export_model(str(ckpt), log=lambda *_: None)
    exported = load_exported(str(output))
    assert exported.classes == predictor.classes
    head = predictor.model.roi_head
    total = 0
    for img in images_of_several_shapes():
        eager = {k: torch.from_numpy(v) for k, v in predictor.predict(img).items() if k != "class_names"}
        got = exported.detect(img)
        assert got["boxes"].dtype == torch.float32 and got["labels"].dtype == torch.int64
        c = compare_detections("img", eager, got, tol=Tolerances(box=1e-2, score=1e-4),
                               score_thresh=head.score_thresh, detections_per_img=head.detections_per_img)
        assert c.passed, c.failures
        assert c.eager == c.exported and c.borderline == 0
        total += c.matched
        if got["boxes"].numel():  # boxes lie inside the input image
            assert float(got["boxes"][:, 0::2].max()) <= img.shape[1] and float(got["boxes"].min()) >= 0
    assert total > 0, "the trained model should detect something on these images"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_with_no_detections(trained, fmt, tmp_path):
    output = tmp_path / "model.onnx"
    report = export_checkpoint(str(trained("fpn_kmeans")), fmt, str(output),
                               overrides=["model.roi_head.score_thresh=1.0"], verify_images=[], log=lambda *_: None)
    assert report["passed"]
    found = load_exported(str(output)).detect(images_of_several_shapes()[0])
    assert found["boxes"].shape == (0, 4) and found["scores"].shape == (0,) and found["labels"].shape == (0,)


def test_split_verification_reports_map_and_every_image(trained, tmp_path):
    report = export_checkpoint(str(trained("fpn_kmeans")), "onnx", str(tmp_path / "m.onnx"), verify_split="val",
                               log=lambda *_: None)
    split = report["split"]
    assert report["passed"] and split["images"] == 4 and split["summary"]["images"] == 4
    assert split["delta"]["mAP"] == pytest.approx(0.0, abs=1e-6)
    assert split["eager"]["mAP"] == pytest.approx(split["exported"]["mAP"], abs=1e-6)


@pytest.mark.parametrize("size", [(480, 640), (443, 589), (301, 199), (17, 33), (1000, 3), (320, 427), (64, 64)])
def test_graph_resize_equals_the_eager_transform(size):
    """Same output size as detkit.data.transforms (float64 rule) and the same pixels as cv2.INTER_LINEAR."""
    h, w = size
    expected = resized_size((h, w), resize_scale((h, w), 320, 427))
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    x, new, orig = resize_for_detector(torch.from_numpy(img), 320, 427)
    assert tuple(new.tolist()) == expected and tuple(orig.tolist()) == (h, w)
    assert tuple(x.shape) == (1, 3, *expected)
    ref = cv2.resize(img, (expected[1], expected[0]), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(x[0].permute(1, 2, 0).numpy().astype(np.uint8), ref)  # bit-exact, shrinking and enlarging


def test_graph_pads_to_the_stride_with_zeros(trained):
    _, graph, _ = build_export_model(str(trained("c5_manual")), log=lambda *_: None)
    x, new, _ = graph.resize_and_normalise(torch.from_numpy(images_of_several_shapes()[3]))  # 61 x 47
    h, w = new.tolist()
    d = graph.size_divisible
    assert x.shape[2] == -(-h // d) * d and x.shape[3] == -(-w // d) * d
    assert float(x[0, :, h:, :].abs().sum()) == 0 and float(x[0, :, :, w:].abs().sum()) == 0


def test_cv2_resize_emulation_on_many_sizes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    for nh, nw in [(64, 87), (48, 65), (97, 131), (33, 129), (96, 130), (300, 400), (150, 131), (97, 500)]:
        got = cv2_linear_resize(torch.from_numpy(img), torch.tensor([nh]), torch.tensor([nw]))
        ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(got[0].permute(1, 2, 0).numpy().astype(np.uint8), ref), (nh, nw)


def test_export_errors_are_clear(trained, tmp_path):
    quiet = {"log": lambda *_: None}
    with pytest.raises(CheckpointError, match="missing.pt"):
        export_checkpoint(str(tmp_path / "missing.pt"), "onnx", str(tmp_path / "m.onnx"), **quiet)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        export_checkpoint(str(corrupt), "torchscript", str(tmp_path / "m.pt"), **quiet)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot write the exported model"):
        export_checkpoint(str(trained("c5_manual")), "onnx", str(blocker / "m.onnx"), **quiet)
    with pytest.raises(ExportError, match="is a folder"):
        export_checkpoint(str(trained("c5_manual")), "onnx", str(tmp_path), **quiet)
    with pytest.raises(ExportError, match="format 'tflite'"):
        export_checkpoint(str(trained("c5_manual")), "tflite", str(tmp_path / "m.tflite"), **quiet)
    with pytest.raises(ExportError, match=r"model.roi_head.aligned.*--opset 16"):
        export_checkpoint(str(trained("fpn_learned_aligned")), "onnx", str(tmp_path / "m.onnx"), opset=15, **quiet)
    with pytest.raises(ExportError, match="opset 99"):
        export_checkpoint(str(trained("c5_manual")), "onnx", str(tmp_path / "m.onnx"), opset=99, **quiet)
    with pytest.raises(ExportError, match=r"soft-NMS.*model.roi_head.nms_method=hard"):
        export_checkpoint(str(trained("c5_manual")), "onnx", str(tmp_path / "m.onnx"),
                          overrides=["model.roi_head.nms_method=gaussian"], **quiet)
    with pytest.raises(ExportError, match=r"test-time augmentation.*model.test_hflip=false"):
        export_checkpoint(str(trained("c5_manual")), "torchscript", str(tmp_path / "m.pt"),
                          overrides=["model.test_hflip=true"], **quiet)
    assert not (tmp_path / "m.onnx").exists()


def test_unexportable_settings_are_all_named_in_one_message():
    assert unexportable_settings(test_hflip=False, nms_method="hard") == []
    found = unexportable_settings(test_hflip=True, nms_method="linear")
    assert [(s.key, s.value, s.exportable) for s in found] == [("model.roi_head.nms_method", "linear", "hard"),
                                                                ("model.test_hflip", "true", "false")]
    lines = describe_unexportable(found).splitlines()
    assert lines[0].startswith("  model.roi_head.nms_method=linear: soft-NMS") and lines[0].endswith(
        "set model.roi_head.nms_method=hard")
    assert lines[1].startswith("  model.test_hflip=true: flip test-time augmentation")
    assert lines[2] == "export with the overrides: model.roi_head.nms_method=hard model.test_hflip=false"
    voting = unexportable_settings(test_hflip=False, nms_method="hard", box_voting=0.8)
    assert [(s.key, s.value, s.exportable) for s in voting] == [("model.roi_head.box_voting", "0.8", "null")]
    scales = unexportable_settings(test_hflip=False, nms_method="hard", test_scales=(1.0, 1.25))
    assert [(s.key, s.value, s.exportable) for s in scales] == [("model.test_scales", "[1.0,1.25]", "[1.0]")]
    assert "scale test-time augmentation" in scales[0].why
    assert unexportable_settings(test_hflip=False, nms_method="hard", test_scales=[1.0]) == []


def test_a_recipe_like_checkpoint_names_every_unexportable_setting_once_and_the_fix_exports(trained, tmp_path,
                                                                                            capsys):
    """As configs/bccd_recipe.yaml infers (soft-NMS, flip and scale TTA): one error with every setting and
    the override line; that line, copied onto the same command, exports."""
    from detkit.weights.checkpoint import load_checkpoint, save_checkpoint

    checkpoint = load_checkpoint(trained("c5_manual"))
    checkpoint["config"]["model"]["test_hflip"] = True
    checkpoint["config"]["model"]["test_scales"] = [1.0, 1.25]
    checkpoint["config"]["model"]["roi_head"]["nms_method"] = "gaussian"
    recipe_like = tmp_path / "recipe_like.pt"
    save_checkpoint(checkpoint, str(recipe_like))
    command = ["--checkpoint", str(recipe_like), "--format", "torchscript", "--output", str(tmp_path / "m.pt"),
               "--no-verify"]
    assert export_tool.main(command) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "3 inference settings" in err
    assert "model.roi_head.nms_method=gaussian" in err and "model.test_hflip=true" in err
    assert "model.test_scales=[1.0,1.25]" in err
    fix = err.strip().splitlines()[-1]
    assert fix == ("export with the overrides: model.roi_head.nms_method=hard model.test_hflip=false "
                   "model.test_scales=[1.0]")
    assert export_tool.main(command + fix.split(": ", 1)[1].split()) == 0
    assert (tmp_path / "m.pt").is_file()


def test_corrupt_exported_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ExportError, match="model.onnx"):
        load_exported(str(bad))
    with pytest.raises(ExportError, match="does not exist"):
        load_exported(str(tmp_path / "nothing.onnx"))


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ExportError, match=r"\.\[export\]"):
        require_onnx()


def test_export_tool_exit_codes_and_infer_with_the_exported_model(trained, tmp_path, capsys):
    ckpt = str(trained("fpn_kmeans"))
    images = tmp_path / "images"
    images.mkdir()
    for i, img in enumerate(images_of_several_shapes()[:3]):
        cv2.imwrite(str(images / f"img{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    paths = sorted(str(p) for p in images.glob("*.png"))
    model = tmp_path / "model.onnx"
    assert export_tool.main(["--checkpoint", ckpt, "--format", "onnx", "--output", str(model),
                             "--verify-images", *paths]) == 0
    assert "verification passed" in capsys.readouterr().err
    # an impossible tolerance turns every matched detection into a mismatch: exit 1, file kept
    assert export_tool.main(["--checkpoint", ckpt, "--format", "onnx", "--output", str(model),
                             "--verify-images", *paths, "--score-tol", "-1"]) == 1
    assert "FAIL" in capsys.readouterr().err and model.exists()
    assert export_tool.main(["--checkpoint", str(tmp_path / "nope.pt"), "--format", "onnx",
                             "--output", str(model)]) == 2

    by_checkpoint, by_model = tmp_path / "eager", tmp_path / "onnx"
    # the exported graph computes in fp32: compare with the checkpoint in fp32 (auto may pick bf16 here)
    assert infer_tool.main(["--checkpoint", ckpt, str(images), "--output-dir", str(by_checkpoint), "--quiet",
                            "--precision", "fp32"]) == 0
    assert infer_tool.main(["--model", str(model), str(images), "--output-dir", str(by_model), "--quiet"]) == 0
    eager = json.loads((by_checkpoint / "detections.json").read_text())
    onnx_found = json.loads((by_model / "detections.json").read_text())
    assert len(eager) == len(onnx_found) > 0
    for a, b in zip(eager, onnx_found):
        assert a["file_name"] == b["file_name"] and a["category_id"] == b["category_id"]
        assert math.isclose(a["score"], b["score"], abs_tol=1e-4)
        assert np.allclose(a["bbox"], b["bbox"], atol=0.02)
    assert sorted(p.name for p in by_model.glob("*.png")) == sorted(p.name for p in by_checkpoint.glob("*.png"))
    assert infer_tool.main(["--model", str(model), str(images), "--output-dir", str(by_model), "--quiet",
                            "--set", "eval.fold_bn=false"]) == 1
    assert "re-export" in capsys.readouterr().err


def test_onnx_file_carries_dynamic_axes_and_metadata(trained, tmp_path):
    onnx, _ = require_onnx()
    output = tmp_path / "model.onnx"
    export_checkpoint(str(trained("c5_manual")), "onnx", str(output), opset=11, verify=False, log=lambda *_: None)
    proto = onnx.load(str(output))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:2]] == ["height", "width"] and dims[2].dim_value == 3
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["detkit"])
    assert meta["classes"] == ["circle", "square", "triangle"] and meta["opset"] == 11
    assert not (tmp_path / "model.onnx.verify.json").exists()


@pytest.mark.slow
def test_bench_export_runs_every_model_on_bccd(tmp_path):
    from tests.data.tools_runner import REPO, run_tool

    if not (REPO.parent / "shared" / "data" / "BCCD").is_dir():
        pytest.skip("BCCD is not at ../shared/data/BCCD")
    from detkit.weights.checkpoint import load_checkpoint, save_checkpoint
    from tests.data.tools_runner import load_script

    # a checkpoint whose config infers as the recipe's does (flip and scale TTA, soft-NMS), which no exported
    # graph computes: the bench must still time all four detkit models, each in one pass with hard NMS
    checkpoint = load_checkpoint(load_script("bench_export.py", folder="benchmarks").random_p1_checkpoint(
        str(tmp_path), 0))
    checkpoint["config"]["model"]["test_hflip"] = True
    checkpoint["config"]["model"]["test_scales"] = [1.0, 0.9]
    checkpoint["config"]["model"]["roi_head"]["nms_method"] = "gaussian"
    save_checkpoint(checkpoint, str(tmp_path / "recipe_like.pt"))
    out = tmp_path / "bench.json"
    result = run_tool("bench_export.py", "--checkpoint", str(tmp_path / "recipe_like.pt"), "--images", "1",
                      "--blocks", "1", "--warmup", "0", "--size", "256,341", "--json", str(out), folder="benchmarks")
    assert result["size"] == [256, 341]
    # the size reached every detkit model, not only the report
    assert result["detkit_test_size"] == {n: [256, 341] for n in ("detkit_fp32", "detkit_auto", "detkit_ts",
                                                                   "detkit_onnx")}
    assert set(result["seconds_per_image"]) == {"tv_eager", "detkit_fp32", "detkit_auto", "detkit_ts", "detkit_onnx"}
    assert all(v > 0 for v in result["seconds_per_image"].values())
    assert json.loads(out.read_text())["ratio_to_tv_eager"]["tv_eager"] == 1.0


def test_bench_export_size_argument():
    import argparse

    from tests.data.tools_runner import load_script

    bench = load_script("bench_export.py", folder="benchmarks")
    assert bench.parse_size("320,427") == (320, 427)
    for bad in ("320", "427,320", "0,10", "a,b"):
        with pytest.raises(argparse.ArgumentTypeError, match="--size"):
            bench.parse_size(bad)
