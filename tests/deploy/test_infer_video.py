"""detkit/deploy/infer_video.py and video inputs of `detkit infer`: annotated video + JSON lines per video.

Most checks run :func:`predict_video` with a stand-in detector (a function of one frame), so they take
well under a second; the module-scoped tiny run (two training steps, score threshold 0, so that the
untrained model finds boxes) backs the end-to-end checks through ``infer_inputs`` and the command, with
a checkpoint and with an exported TorchScript model.
"""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

import detkit.cli
from detkit.deploy.infer_files import expand_inputs, infer_inputs
from detkit.deploy.infer_video import VIDEO_EXTENSIONS, open_video, predict_video
from detkit.errors import DataError
from tests.engine.conftest import train_tiny_run

FRAMES, HEIGHT, WIDTH, FPS = 12, 96, 128, 10.0
CLASSES = ["circle", "square", "triangle"]
QUIET = {"progress": False, "log": lambda *_: None}


def write_video(path, frames=FRAMES, size=(HEIGHT, WIDTH), fps=FPS, colour_of=None):
    """A synthetic mp4v video: frame i is a solid BGR colour (``colour_of(i)``, default grey levels)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((*size, 3), colour_of(i) if colour_of else 10 + 15 * i, np.uint8))
    writer.release()
    return path


def read_frames(path):
    """(frames as BGR arrays, fps) of a video file."""
    capture = cv2.VideoCapture(str(path))
    fps, frames = capture.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


class FakeDetector:
    """One box per frame in the top-left quarter (score 0.9, label 2) and one in the bottom-right quarter
    (score 0.1, label 1); records the frames it was given."""

    def __init__(self):
        self.frames = []

    def __call__(self, rgb):
        self.frames.append(rgb.copy())
        return {"boxes": np.array([[10, 10, 50, 40], [80, 60, 120, 90]], np.float32),
                "scores": np.array([0.9, 0.1], np.float32), "labels": np.array([2, 1], np.int64)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    run = train_tiny_run(tmp_path_factory.mktemp("tiny_video"),
                         **{"train.max_iters": 2, "model.roi_head.score_thresh": 0.0})
    return str(run / "last.pt")


@pytest.mark.parametrize("every, processed", [(1, list(range(FRAMES))), (3, [0, 3, 6, 9]), (5, [0, 5, 10])])
def test_every_frame_is_written_and_every_nth_is_detected(tmp_path, every, processed):
    source = write_video(tmp_path / "clip.avi")
    detect = FakeDetector()
    found = predict_video(detect, str(source), output_dir=str(tmp_path / "out"), classes=CLASSES,
                          category_ids=[1, 2, 3], every=every, **QUIET)
    assert found["frames"] == FRAMES and found["processed_frames"] == len(processed) == len(detect.frames)
    assert found["detections"] == 2 * len(processed)
    frames, fps = read_frames(tmp_path / "out" / "clip.mp4")
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3) and fps == pytest.approx(FPS)
    lines = jsonl(tmp_path / "out" / "clip.jsonl")
    assert [line["frame"] for line in lines] == processed
    assert [line["time"] for line in lines] == pytest.approx([i / FPS for i in processed])
    assert lines[0]["detections"][0] == {"bbox": [10.0, 10.0, 40.0, 30.0], "score": 0.9, "category_id": 2,
                                         "class_name": "square"}
    assert len(lines[0]["detections"]) == 2  # the JSON holds detections below the drawing threshold too


def test_frames_go_to_the_model_as_rgb_and_are_written_back_as_bgr_with_only_drawable_boxes(tmp_path):
    red = (0, 0, 255)  # BGR
    source = write_video(tmp_path / "red.mp4", colour_of=lambda i: red)
    detect = FakeDetector()
    predict_video(detect, str(source), output_dir=str(tmp_path / "out"), classes=CLASSES, category_ids=[1, 2, 3],
                  every=4, draw_threshold=0.3, **QUIET)
    first = detect.frames[0]
    assert first[..., 0].mean() > 200 and first[..., 2].mean() < 50  # RGB: red in channel 0
    frames, _ = read_frames(tmp_path / "out" / "red.mp4")
    for index in (0, 1, 5):  # frames 1 and 5 were not detected on: they show the latest detections
        frame = frames[index].astype(int)
        assert frame[2:6, 100:124, 2].mean() > 200 and frame[2:6, 100:124, 0].mean() < 50  # still red, as BGR
        outline = frame[9:12, 20:40]  # the top side of the 0.9 box: drawn, not red
        assert np.abs(outline - np.array(red)).sum(axis=2).mean() > 100, index
        low = frame[59:62, 85:115]  # the top side of the 0.1 box: below the drawing threshold, not drawn
        assert np.abs(low - np.array(red)).sum(axis=2).mean() < 40, index


def test_output_names_do_not_collide(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    used = set()
    for folder in ("a", "b"):
        source = write_video(tmp_path / folder / "clip.mp4", frames=2)
        predict_video(FakeDetector(), str(source), output_dir=str(tmp_path / "out"), classes=CLASSES,
                      category_ids=[1, 2, 3], used_names=used, **QUIET)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.jsonl", "clip.mp4", "clip_1.jsonl",
                                                                    "clip_1.mp4"]
    # Written into the input's own folder, the annotated video does not overwrite its input.
    found = predict_video(FakeDetector(), str(tmp_path / "a" / "clip.mp4"), output_dir=str(tmp_path / "a"),
                          classes=CLASSES, category_ids=[1, 2, 3], **QUIET)
    assert found["video"].endswith("clip_1.mp4") and len(read_frames(tmp_path / "a" / "clip.mp4")[0]) == 2


def _bad_videos(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    garbage = tmp_path / "noise.mkv"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    return {"text": (text, "cannot be opened by OpenCV"), "empty": (empty, "is empty"),
            "garbage": (garbage, "(cannot be opened by OpenCV|has no frame)")}


@pytest.mark.parametrize("kind", ["text", "empty", "garbage"])
def test_an_unreadable_video_is_a_clear_error_and_writes_nothing(tmp_path, kind):
    path, reason = _bad_videos(tmp_path)[kind]
    with pytest.raises(DataError, match=reason) as error:
        predict_video(FakeDetector(), str(path), output_dir=str(tmp_path / "out"), classes=CLASSES,
                      category_ids=[1, 2, 3], **QUIET)
    message = str(error.value)
    assert str(path) in message and all(ext in message for ext in VIDEO_EXTENSIONS)  # names what is valid
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_video_without_frames_is_a_clear_error(tmp_path):
    path = tmp_path / "none.mp4"
    cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT)).release()  # no frame
    with pytest.raises(DataError, match=rf"'{path}'.*(is empty|cannot be opened|has no frame)"):
        open_video(str(path))
    with pytest.raises(DataError, match="does not exist"):
        open_video(str(tmp_path / "missing.mp4"))


def test_folders_give_their_videos_to_infer_but_not_to_predict(tmp_path):
    write_video(tmp_path / "b.mp4", frames=1)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "c.txt").write_text("x")
    assert expand_inputs([str(tmp_path)], videos=True)[0] == [str(tmp_path / "a.png"), str(tmp_path / "b.mp4")]
    assert expand_inputs([str(tmp_path)])[0] == [str(tmp_path / "a.png")]


def test_infer_on_a_folder_with_a_checkpoint_writes_images_videos_and_counts(checkpoint, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_video(inputs / "clip.mov")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(inputs / "a.png")
    summary = infer_inputs([str(inputs)], output_dir=str(tmp_path / "out"), checkpoint=checkpoint, every=3, **QUIET)
    assert summary["failed"] == [] and summary["processed"] == 1
    assert summary["videos"] == 1 and summary["frames"] == FRAMES
    lines = jsonl(tmp_path / "out" / "clip.jsonl")
    assert [line["frame"] for line in lines] == [0, 3, 6, 9]
    image_detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert {d["file_name"] for d in image_detections} == {"a.png"}  # detections.json: images only
    assert summary["detections"] == len(image_detections) + sum(len(line["detections"]) for line in lines) > 0
    assert len(read_frames(tmp_path / "out" / "clip.mp4")[0]) == FRAMES


def test_infer_on_a_video_with_an_exported_model(checkpoint, tmp_path):
    from detkit.deploy.export import export_checkpoint

    model = tmp_path / "model.ts.pt"
    export_checkpoint(checkpoint, "torchscript", str(model), verify=False, log=lambda *_: None)
    source = write_video(tmp_path / "clip.mp4", frames=4)
    summary = infer_inputs([str(source)], output_dir=str(tmp_path / "out"), exported=str(model), every=2, **QUIET)
    assert summary["failed"] == [] and summary["videos"] == 1 and summary["frames"] == 4
    assert [line["frame"] for line in jsonl(tmp_path / "out" / "clip.jsonl")] == [0, 2]
    assert len(read_frames(tmp_path / "out" / "clip.mp4")[0]) == 4
    assert not (tmp_path / "out" / "detections.json").exists()  # videos only: no empty detections.json


def test_the_command_skips_a_bad_video_processes_the_rest_and_exits_1(checkpoint, tmp_path, capsys):
    good = write_video(tmp_path / "good.mp4")
    bad, _ = _bad_videos(tmp_path)["text"]
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    rc = detkit.cli.main(["infer", "--checkpoint", checkpoint, str(bad), str(good), str(image), "--output-dir",
                          str(out), "--quiet", "--every", "3"])
    captured = capsys.readouterr()
    assert rc == 1
    assert f"skipped: video file '{bad}'" in captured.err
    assert "1 image(s) processed, 1 video(s) (12 frame(s)) processed" in captured.out and "1 failed" in captured.out
    assert len(read_frames(out / "good.mp4")[0]) == FRAMES and len(jsonl(out / "good.jsonl")) == 4
    assert (out / "photo.png").is_file() and not (out / "notes.mp4").exists()


def test_every_below_1_is_a_usage_error(checkpoint, tmp_path, capsys):
    rc = detkit.cli.main(["infer", "--checkpoint", checkpoint, str(tmp_path), "--every", "0", "--quiet"])
    assert rc == 1 and "--every must be a whole number of at least 1" in capsys.readouterr().err
