"""detkit/deploy/predictor.py: one entry point for arrays, files, folders and glob patterns."""

import json

import numpy as np
import pytest
from PIL import Image

from detkit.deploy.predictor import load_model
from detkit.errors import DataError
from tests.engine.conftest import train_tiny_run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("tiny"), **{"train.max_iters": 2, "model.roi_head.score_thresh": 0.0})


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return load_model(str(tiny_run / "last.pt"), log=lambda *_: None)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    arrays = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(folder / f"img{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder, arrays


def _same(a, b):
    # A folder is predicted in batches, one array alone: fp32 rounding differs with the batch (seen:
    # 1.4e-4 px at 42 px on an AVX2 CPU), a wrong image or order by pixels.
    np.testing.assert_allclose(a["boxes"], b["boxes"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    np.testing.assert_array_equal(a["labels"], b["labels"])


def test_a_folder_and_a_pattern_give_the_detections_of_each_image_file(predictor, images):
    folder, arrays = images
    by_folder = predictor.predict(str(folder))
    assert [entry["file"] for entry in by_folder] == [str(folder / f"img{i}.png") for i in range(3)]
    assert any(len(entry["boxes"]) for entry in by_folder)  # score_thresh 0: the untrained model finds boxes
    for entry, array in zip(by_folder, arrays):  # the same as each array and each file on its own
        _same(entry, predictor.predict(array))
        _same(entry, predictor.predict(entry["file"]))
    by_pattern = predictor.predict(str(folder / "img[02].png"))
    assert [entry["file"] for entry in by_pattern] == [str(folder / "img0.png"), str(folder / "img2.png")]


def test_predict_files_writes_drawings_and_detections(predictor, images, tmp_path):
    folder, _ = images
    summary = predictor.predict_files([str(folder)], str(tmp_path / "out"), progress=False, log=lambda *_: None)
    assert summary["processed"] == 3 and summary["failed"] == []
    results = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert len(results) == summary["detections"] > 0
    assert {r["file_name"] for r in results} <= {f"img{i}.png" for i in range(3)}
    assert sorted(p.name for p in (tmp_path / "out").glob("img*")) == [f"img{i}.png" for i in range(3)]


def test_nothing_to_read_is_one_clear_error(predictor, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="folder has no image files"):
        predictor.predict(str(tmp_path / "empty"))
    with pytest.raises(DataError, match="no such file"):
        predictor.predict(str(tmp_path / "missing.png"))


def test_a_list_of_checkpoints_predicts_as_their_ensemble(tiny_run, predictor, images):
    from detkit.modeling.ensemble import DetectorEnsemble

    ensemble = load_model([str(tiny_run / "last.pt"), str(tiny_run / "best.pt")], log=lambda *_: None)
    assert isinstance(ensemble.model, DetectorEnsemble) and len(ensemble.model.members) == 2
    assert ensemble.classes == predictor.classes
    found = ensemble.predict(images[1][0])
    assert found["boxes"].shape == (len(found["scores"]), 4) and len(found["scores"]) > 0
    assert all(name in ensemble.classes for name in found["class_names"])
