"""tools/lint_data.py, tools/voc2coco.py, benchmarks/bench_data.py and configs/bccd_r18_fpn.yaml."""

from __future__ import annotations

import json

import yaml
from data_helpers import voc_xml, write_coco, write_image, write_voc
from tools_runner import REPO, run_tool

from detkit.config import load_config


def test_bccd_config_is_valid_and_points_at_bccd(bccd_root, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = load_config("configs/bccd_r18_fpn.yaml")
    d = cfg.data
    assert d.format == "voc" and d.train.splits == ["train"] and d.val.splits == ["test"]
    assert d.min_size == [320] and d.max_size == 427 and d.augment.hflip_prob == 0.5
    assert d.augment.vflip_prob == 0 and d.augment.crop_prob == 0 and d.augment.color_jitter_prob == 0


def test_lint_bccd_reports_flaws(bccd_root, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(REPO)
    out = tmp_path / "lint.json"
    assert run_tool("lint_data.py", "--config", "configs/bccd_r18_fpn.yaml", "--json", str(out), "--no-decode",
                    f"data.train.roots=[{bccd_root}]", f"data.val.roots=[{bccd_root}]") == 0
    report = json.loads(out.read_text())
    train = report["train"]
    assert train["images"] == 205 and train["boxes"] == 2804
    assert train["boxes_per_class"] == {"Platelets": 209, "RBC": 2381, "WBC": 214}
    assert train["fixes"]["degenerate_dropped"]["count"] == 1
    assert train["fixes"]["near_duplicate"]["count"] == 4
    assert report["val"]["images"] == 72
    assert train["box_sizes"]["resized"]["count"] == 2804
    assert (tmp_path / "lint.png").stat().st_size > 1000
    assert "zero- or negative-area" in capsys.readouterr().out


def _lint_voc_train(tmp_path, split: str) -> dict:
    """tools/lint_data.py on a VOC config whose train (and val) split is `split` (YAML); its train result."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"format": "voc"}}))
    out = tmp_path / "voc.json"
    assert run_tool("lint_data.py", "--config", str(cfg), "--json", str(out), "--split", "train",
                    f"data.train={split}", f"data.val={split}") == 0
    return json.loads(out.read_text())["train"]


def test_lint_other_voc_layout_and_coco_with_overrides_only(tmp_path):
    root = tmp_path / "mine"
    for k, name in enumerate(["a", "b"]):
        write_image(root / "pics" / f"{name}.png", (50, 70), seed=k)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        objects = [("dog", 1, 1, 80, 20)] if name == "a" else []
        (root / "labels" / f"{name}.xml").write_text(voc_xml(f"{name}.png", (70, 50), objects))
    (root / "pics" / "b.png").write_bytes((root / "pics" / "b.png").read_bytes()[:60])  # truncated
    r = _lint_voc_train(tmp_path, f"{{roots: [{root}], splits: [], ann_dir: labels, img_dir: pics}}")
    assert r["images"] == 1 and r["fixes"]["clipped"]["count"] == 1
    assert r["fixes"]["bad_image_skipped"]["count"] == 1

    write_image(tmp_path / "c" / "x.jpg", (30, 40))
    write_coco(tmp_path / "c" / "a.json", [{"id": 1, "file_name": "x.jpg", "width": 40, "height": 30},
                                           {"id": 2, "file_name": "gone.jpg", "width": 40, "height": 30}],
               [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 4], "iscrowd": 0}],
               [{"id": 1, "name": "x"}])
    coco_split = f"{{ann_file: {tmp_path / 'c' / 'a.json'}, img_dir: {tmp_path / 'c'}}}"
    cfg = tmp_path / "cfg.yaml"  # the VOC config _lint_voc_train wrote, switched to COCO below
    out = tmp_path / "coco.json"
    assert run_tool("lint_data.py", "--config", str(cfg), "--json", str(out), "--split", "train",
                    "data.format=coco", f"data.train={coco_split}", f"data.val={coco_split}") == 0
    r = json.loads(out.read_text())["train"]
    assert r["fixes"]["degenerate_dropped"]["count"] == 1 and r["fixes"]["bad_image_skipped"]["count"] == 1
    assert r["empty_images"]["count"] == 1


def test_lint_bad_config_exits_nonzero(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("data: {format: voc, train: {roots: [/nowhere]}, val: {roots: [/nowhere]}}\n")
    assert run_tool("lint_data.py", "--config", str(cfg)) == 2
    assert "/nowhere" in capsys.readouterr().err


def test_voc2coco_cli_any_folder(tmp_path):
    root = write_voc(tmp_path / "v", {"a": [("cat", 1, 1, 9, 9)], "b": [("dog", 2, 2, 8, 8, 1)]}, split=None)
    out = tmp_path / "o.json"
    assert run_tool("voc2coco.py", "--root", str(root), "--out", str(out), "--img-root", str(tmp_path)) == 0
    data = json.loads(out.read_text())
    assert [im["file_name"] for im in data["images"]] == ["v/JPEGImages/a.jpg", "v/JPEGImages/b.jpg"]
    assert [(a["bbox"], a["iscrowd"]) for a in data["annotations"]] == [([0, 0, 9, 9], 0), ([1, 1, 7, 7], 1)]


def test_bench_data_smoke(tmp_path, monkeypatch):
    from data_helpers import tiny_synthetic_config

    from detkit.config import save_config

    cfg_path = tmp_path / "synth.yaml"
    save_config(tiny_synthetic_config(tmp_path / "cache"), cfg_path)
    out = tmp_path / "bench.json"
    assert run_tool("bench_data.py", "--config", str(cfg_path), "--workers", "0", "--out", str(out),
                    folder="benchmarks") == 0
    results = json.loads(out.read_text())["results"]
    assert [r["preset"] for r in results] == ["config", "full"] and all(r["images_per_s"] > 0 for r in results)


def test_lint_lists_every_broken_annotation(tmp_path):
    root = write_voc(tmp_path / "voc", {"a": [("cat", 1, 1, 9, 9)], "b": [], "c": []})
    (root / "Annotations" / "b.xml").write_text("<annotation><object>")
    (root / "Annotations" / "c.xml").write_text("")
    r = _lint_voc_train(tmp_path, f"{{roots: [{root}], splits: [train]}}")
    assert r["images"] == 1 and r["fixes"]["bad_annotation_skipped"]["count"] == 2
    assert [m.split("'")[1].rsplit("/", 1)[-1] for m in r["bad_annotations"]] == ["b.xml", "c.xml"]
