"""The peer of benchmarks/bench_scale.py's loader stage: a torchvision-reference-style COCO data set.

Like the torchvision detection references (CocoDetection + a target dict per image), it keeps the
annotations as Python objects: pycocotools' index plus one dict per image with lists of boxes and
labels, which every DataLoader worker inherits and touches.
"""

from __future__ import annotations

import contextlib
import io
import os

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch.utils.data import Dataset


class DictPerImageDataset(Dataset):
    """One dict per image: {"file_name", "boxes": [[x1, y1, x2, y2], ...], "labels": [...], "image_id"}."""

    def __init__(self, ann_file: str, img_dir: str) -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(ann_file)
        self.img_dir = img_dir
        self.items = []
        for image_id in sorted(self.coco.imgs):
            anns = self.coco.imgToAnns.get(image_id, [])
            self.items.append({"image_id": image_id, "file_name": self.coco.imgs[image_id]["file_name"],
                               "boxes": [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2],
                                          a["bbox"][1] + a["bbox"][3]] for a in anns if not a.get("iscrowd", 0)],
                               "labels": [a["category_id"] for a in anns if not a.get("iscrowd", 0)]})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        with Image.open(os.path.join(self.img_dir, item["file_name"])) as img:
            image = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)
        target = {"boxes": torch.as_tensor(item["boxes"], dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.as_tensor(item["labels"], dtype=torch.int64), "image_id": item["image_id"]}
        return image, target
