"""configs/bccd_recipe.yaml is a recipe for any data set: swapping its data paths for another set trains."""

from pathlib import Path

from detkit.config import load_config
from detkit.engine.trainer import Trainer

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "bccd_recipe.yaml"


def test_recipe_trains_on_another_data_set(tmp_path):
    """Only the data source changes (a synthetic set instead of BCCD's VOC folders); the anchors are
    fitted to that set's boxes; the run keeps best.pt and last.pt alone (no evaluated/ unless asked)."""
    overrides = [
        "data.format=synthetic", f"data.synthetic.cache_dir={tmp_path / 'synthetic'}",
        "data.synthetic.num_train=6", "data.synthetic.num_val=2", "data.synthetic.image_size=96",
        "train.epochs=1", "train.max_iters=2", "eval.precise_bn_batches=1", f"output.dir={tmp_path / 'run'}",
    ]
    cfg = load_config(str(RECIPE), overrides)
    assert cfg.model.anchors.mode == "kmeans" and cfg.train.schedule == "cosine"
    logged = []
    Trainer(cfg, quiet=True, log=logged.append).run()
    assert any(line.startswith("anchors: kmeans") for line in logged), logged
    assert not cfg.train.keep_evaluated and not (tmp_path / "run" / "evaluated").exists()
    assert (tmp_path / "run" / "best.pt").is_file() and (tmp_path / "run" / "last.pt").is_file()
    assert any(line.startswith("wall time ") for line in logged)
