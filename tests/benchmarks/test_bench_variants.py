"""benchmarks/bench_model.py and bench_variants.py: the four precision variants run and are what they say."""

import pytest
import torch

from benchmarks import bench_model, bench_variants
from detkit.runtime.precision import cpu_bf16_missing

ALL_VARIANTS = ["detkit_fp32", "detkit_fast", "tv_fp32", "tv_fast"]
# Without native bf16 (an AVX2-only CPU) each bf16 variant takes ~48 s here, against ~3 s for an fp32 one:
# the default suite runs the bf16 ones only where the CPU computes bf16, and `-m slow` (CI) everywhere.
NATIVE_BF16 = cpu_bf16_missing() is None


def _bench_rows(tmp_path, models):
    result = bench_model.main(["--batch", "1", "--height", "128", "--width", "160", "--blocks", "1",
                               "--warmup", "0", "--models", ",".join(models), "--json", str(tmp_path / "bench.json")])
    assert (tmp_path / "bench.json").is_file()
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == set(models)
    assert all(r["train_s_per_img"] > 0 and r["infer_s_per_img"] > 0 for r in rows.values())
    assert rows["tv_fp32"]["train_ratio_to_tv_fp32"]["median"] == 1.0


@pytest.mark.skipif(not NATIVE_BF16, reason="bf16 emulated on this CPU: the bf16 variants run under -m slow")
def test_bench_model_runs_every_variant(tmp_path):
    _bench_rows(tmp_path, ALL_VARIANTS)


@pytest.mark.skipif(NATIVE_BF16, reason="test_bench_model_runs_every_variant covers them on this CPU")
def test_bench_model_runs_the_fp32_variants(tmp_path):
    _bench_rows(tmp_path, ["detkit_fp32", "tv_fp32"])


@pytest.mark.slow
def test_bench_model_runs_every_variant_with_emulated_bf16(tmp_path, monkeypatch):
    monkeypatch.setenv("DETKIT_CPU_BF16", "1")  # the fast variants on any CPU (emulated there: slower, same code)
    _bench_rows(tmp_path, ALL_VARIANTS)


def test_variants_set_layout_precision_and_fold_the_fast_inference_model(monkeypatch):
    monkeypatch.setenv("DETKIT_CPU_BF16", "1")
    from detkit.config import Config
    from detkit.modeling.detector import build_detector

    variants = bench_variants.make_variants(["detkit_fp32", "detkit_fast"],
                                            lambda base: build_detector(Config(), 2, log=print), log=lambda *_: None)
    slow, fast = variants["detkit_fp32"], variants["detkit_fast"]
    assert slow.precision.name == "fp32" and fast.precision.name == "bf16"
    assert slow.train_model.backbone.body.conv1.weight.is_contiguous()
    assert fast.train_model.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.infer_model.modules())  # folded
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.train_model.modules())  # training keeps it


def test_bench_model_batches_fit_small_images():
    """Its painted boxes (16 to 120 px) are capped to the image, so a small test size still runs."""
    images, targets = bench_model.make_batch(2, 48, 64, 3, 0)
    for image, target in zip(images, targets):
        assert image.shape == (3, 48, 64)
        boxes = target["boxes"]
        assert len(boxes) >= 8 and (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 48).all() and (boxes[:, 2:] > boxes[:, :2]).all()


def test_the_fp32_channels_last_variant_is_fp32_with_channels_last_weights():
    from detkit.config import Config
    from detkit.modeling.detector import build_detector

    assert bench_variants.parse_variant("detkit_fp32cl") == ("detkit", False, "channels_last")
    assert bench_variants.parse_variant("tv_fp32") == ("tv", False, "contiguous")
    assert bench_variants.parse_variant("detkit_fast") == ("detkit", True, "channels_last")
    variants = bench_variants.make_variants(["detkit_fp32", "detkit_fp32cl"],
                                            lambda base: build_detector(Config(), 2, log=print), log=lambda *_: None)
    plain, cl = variants["detkit_fp32"], variants["detkit_fp32cl"]
    assert plain.precision.name == cl.precision.name == "fp32"
    assert plain.train_model.backbone.body.conv1.weight.is_contiguous()
    assert cl.train_model.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert cl.infer_model is cl.train_model  # no folded copy for an fp32 variant
