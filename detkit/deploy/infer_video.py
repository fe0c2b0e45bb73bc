"""Inference on video files: read frames with OpenCV, detect, write an annotated video and a JSON-lines log.

For an input ``clip.avi`` :func:`predict_video` writes into the output folder

- ``clip.mp4``: every input frame, in order, with the latest detections drawn (mp4v codec, the input's
  frame rate and size, so its frame count equals the input's);
- ``clip.jsonl``: one line per processed frame (every ``every``-th frame, starting with frame 0):
  ``{"frame": index, "time": seconds, "detections": [{"bbox": [x, y, w, h], "score": s,
  "category_id": c, "class_name": name}, ...]}`` with COCO's ``bbox`` in the frame's pixels.

The model is passed in as a function of one RGB frame (see ``detkit.deploy.infer_files``), so this
module knows nothing of checkpoints or exported models. OpenCV decodes to BGR: frames are turned to
RGB for the model and the drawing, and back to BGR for writing. A file OpenCV cannot open, or one
with no frame, is a :class:`~detkit.errors.DataError` raised before any output is written.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from detkit.deploy.detection_records import coco_entries
from detkit.errors import DataError
from detkit.vis import DEFAULT_DRAW_THRESHOLD, draw_detections

__all__ = ["VIDEO_EXTENSIONS", "DEFAULT_FPS", "is_video", "open_video", "predict_video", "VideoInfo", "frame_record",
           "video_output_paths"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_FPS = 25.0  # written when a file does not say its frame rate

# frame (H, W, 3) uint8 RGB -> {"boxes": float (D, 4) xyxy in the frame's pixels, "scores": (D,), "labels": (D,)}
FrameDetector = Callable[[np.ndarray], Dict[str, np.ndarray]]


def is_video(path: str) -> bool:
    """Whether ``path`` is named like a video file (one of :data:`VIDEO_EXTENSIONS`, any case)."""
    return path.lower().endswith(VIDEO_EXTENSIONS)


@dataclass
class VideoInfo:
    """What a video file says about itself: ``frames`` is the container's count (0 when unknown;
    only an estimate for some formats), ``width`` x ``height`` those of its first frame."""

    fps: float
    width: int
    height: int
    frames: int


def _unreadable(path: str, why: str) -> DataError:
    return DataError(f"video file '{path}' {why}; a video input must be a file OpenCV can decode "
                     f"({', '.join(VIDEO_EXTENSIONS)} with a codec of this OpenCV build, e.g. H.264 or MPEG-4)")


def open_video(path: str) -> tuple:
    """Open ``path`` and read its first frame: ``(capture, first BGR frame, VideoInfo)``.

    Raises:
        DataError: the file is missing or empty, OpenCV cannot open it, or it has no frame to read.
    """
    if not os.path.isfile(path):
        raise DataError(f"video file '{path}' does not exist")
    if os.path.getsize(path) == 0:
        raise _unreadable(path, "is empty (0 bytes)")
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        capture.release()
        raise _unreadable(path, "cannot be opened by OpenCV (not a video, or an unsupported container or codec)")
    ok, frame = capture.read()
    if not ok or frame is None or frame.ndim != 3 or frame.shape[2] != 3:
        capture.release()
        raise _unreadable(path, "has no frame that OpenCV can decode")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    info = VideoInfo(fps=fps if math.isfinite(fps) and fps > 0 else 0.0, width=int(frame.shape[1]),
                     height=int(frame.shape[0]), frames=max(0, frames))
    return capture, frame, info


def video_output_paths(output_dir: str, path: str, used_names: set) -> tuple:
    """(``<stem>.mp4``, ``<stem>.jsonl``) in ``output_dir`` for input ``path``: a suffix ``_1``, ``_2``, ...
    when another input took the stem already, or when the output would overwrite the input itself."""
    stem = os.path.splitext(os.path.basename(path))[0]
    name, counter = stem, 1
    while (f"{name}.mp4" in used_names or f"{name}.jsonl" in used_names
           or os.path.abspath(os.path.join(output_dir, f"{name}.mp4")) == os.path.abspath(path)):
        name, counter = f"{stem}_{counter}", counter + 1
    used_names.update({f"{name}.mp4", f"{name}.jsonl"})
    return os.path.join(output_dir, f"{name}.mp4"), os.path.join(output_dir, f"{name}.jsonl")


def frame_record(index: int, fps: float, found: Dict[str, np.ndarray], classes: Sequence[str],
                 category_ids: Sequence[int]) -> dict:
    """The JSON line of frame ``index``: its time in seconds and its detections (COCO ``bbox`` xywh)."""
    detections = [dict(entry, class_name=classes[int(label) - 1]) for entry, label in
                  zip(coco_entries(found["boxes"], found["scores"], found["labels"], category_ids), found["labels"])]
    return {"frame": index, "time": round(index / fps, 4), "detections": detections}


def _annotate(frame_rgb: np.ndarray, found: Dict[str, np.ndarray], classes: Sequence[str],
              draw_threshold: float) -> np.ndarray:
    """The frame (RGB) with ``found`` drawn, in the frame's own size, as BGR for the writer."""
    drawn = draw_detections(frame_rgb, found["boxes"], list(found["labels"]), list(found["scores"]), classes,
                            min_score=draw_threshold, min_side=0)
    return cv2.cvtColor(np.asarray(drawn), cv2.COLOR_RGB2BGR)


def _empty() -> Dict[str, np.ndarray]:
    return {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros((0,), np.float32),
            "labels": np.zeros((0,), np.int64)}


def predict_video(detect: FrameDetector, path: str, *, output_dir: str, classes: Sequence[str],
                  category_ids: Sequence[int], every: int = 1, draw_threshold: float = DEFAULT_DRAW_THRESHOLD,
                  used_names: Optional[set] = None, progress: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    """Detect on every ``every``-th frame of the video ``path``; write ``<stem>.mp4`` and ``<stem>.jsonl``.

    Every frame is written to the annotated video; a frame that is not processed shows the detections
    of the latest processed one. Only detections scoring at least ``draw_threshold`` are drawn; the
    JSON lines hold all that ``detect`` returned.

    Returns:
        ``{"frames": frames written, "processed_frames": frames detected on, "detections": n, "video": path
        of the annotated video, "jsonl": path of the JSON lines}``.
    Raises:
        DataError: the video cannot be read (nothing is written then), or the annotated video cannot be
            written; ``every`` below 1.
    """
    if int(every) < 1:
        raise DataError(f"--every must be a whole number of at least 1 (every N-th frame), got {every}")
    capture, frame, info = open_video(path)
    try:
        if info.fps == 0.0:
            log(f"note: video file '{path}' does not give its frame rate: writing {DEFAULT_FPS:g} frames/s")
        os.makedirs(output_dir, exist_ok=True)
        video_path, jsonl_path = video_output_paths(output_dir, path, set() if used_names is None else used_names)
        counts = _run_frames(detect, capture, frame, info, video_path, jsonl_path, every=int(every),
                             classes=classes, category_ids=category_ids, draw_threshold=draw_threshold,
                             progress=progress)
    finally:
        capture.release()
    return dict(counts, video=video_path, jsonl=jsonl_path)


def _run_frames(detect: FrameDetector, capture, frame: np.ndarray, info: VideoInfo, video_path: str,
                jsonl_path: str, *, every: int, classes: Sequence[str], category_ids: Sequence[int],
                draw_threshold: float, progress: bool) -> dict:
    """The frame loop of :func:`predict_video`, from the already-read first ``frame`` to the last."""
    fps = info.fps or DEFAULT_FPS
    size = (info.width, info.height)
    writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise DataError(f"cannot write the annotated video '{video_path}' (OpenCV's mp4v writer did not open): "
                        "check that the output folder is writable")
    bar = tqdm(total=info.frames or None, desc=os.path.basename(video_path), unit="frame", leave=False,
               disable=not progress or not sys.stderr.isatty())
    index, processed, detections, latest = 0, 0, 0, _empty()
    try:
        with open(jsonl_path, "w", encoding="utf-8") as lines:
            while frame is not None:
                if frame.shape[1::-1] != size:  # a frame of another size would be dropped by the writer
                    frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                if index % every == 0:
                    latest = detect(rgb)
                    record = frame_record(index, fps, latest, classes, category_ids)
                    lines.write(json.dumps(record) + "\n")
                    processed, detections = processed + 1, detections + len(record["detections"])
                writer.write(_annotate(rgb, latest, classes, draw_threshold))
                index += 1
                bar.update(1)
                ok, frame = capture.read()
                frame = frame if ok else None
    finally:
        writer.release()
        bar.close()
    return {"frames": index, "processed_frames": processed, "detections": detections}
