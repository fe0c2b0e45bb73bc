"""README.md's Python example runs as written (in a scratch folder that sees the repository's configs)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_python_blocks():
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_one_python_example():
    assert len(readme_python_blocks()) == 1


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    script = tmp_path / "example.py"
    script.write_text(readme_python_blocks()[0], encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert any(line.startswith("mAP ") for line in lines), lines[-20:]
    assert (tmp_path / "runs" / "example" / "best.pt").exists()


def test_readme_example_api_on_a_tiny_run(tmp_path):
    """The example's calls, on a run small enough for the default suite."""
    import numpy as np

    import detkit
    from detkit.errors import DataError
    from tests.engine.conftest import tiny_overrides

    cfg = detkit.load_config(None, tiny_overrides(tmp_path, **{"train.max_iters": 2, "train.eval_every": 0,
                                                                 "eval.precise_bn_batches": 0}))
    metrics = detkit.train(cfg, quiet=True, log=lambda *_: None)
    assert "mAP" in metrics["coco"]
    model = detkit.load_model(str(tmp_path / "run" / "best.pt"), overrides=["model.roi_head.score_thresh=0.0"])
    assert model.classes == ["circle", "square", "triangle"]
    image = (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)
    found = model.predict(image)
    assert set(found) == {"boxes", "scores", "labels", "class_names"}
    assert found["boxes"].shape[1:] == (4,) and found["boxes"].dtype == np.float32
    assert len(found["boxes"]) > 0  # score_thresh 0: boxes to check, so the checks below cannot pass vacuously
    assert found["boxes"][:, 2].max() <= 80 and found["boxes"][:, 3].max() <= 48  # the input's pixels
    assert ((found["scores"] >= 0) & (found["scores"] <= 1)).all()
    assert all(model.classes[k - 1] == n for k, n in zip(found["labels"], found["class_names"]))
    both = model.predict([image, image], score_threshold=2.0)
    assert [len(f["boxes"]) for f in both] == [0, 0]
    with pytest.raises(DataError, match="uint8"):
        model.predict(image.astype(np.float32))
