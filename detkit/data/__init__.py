"""detkit.data: data sets (VOC, COCO, built-in synthetic), albumentations transforms, loaders, linter.

Modules (import what you need; nothing heavy is imported here):
    dataset.py    DetectionDataset base and the sample format every data set returns
    voc.py        VOCDataset (official layout and any folder of VOC XML), VOC pixel convention
    coco.py       COCODataset (pycocotools), COCO box convention, category id <-> label mapping
    synthetic.py  prepare_synthetic: the deterministic shapes set, cached as images + COCO JSON
    image_io.py   read_image (any image kind -> RGB uint8, EXIF applied), header sizes, truncation
    sanitize.py   drop degenerate / clip / de-duplicate boxes, counted in a DataReport
    report.py     DataReport: every fix counted, summarised once per data set
    transforms.py build_transforms: train / test presets, torchvision's resize rule, seeding
    samplers.py   aspect-ratio grouped and sharded batch samplers (DDP-ready)
    loader.py     build_dataset, build_loader, collate, resized boxes for anchor fitting
    coco_export.py  any data set -> COCO JSON (voc2coco, ground truth for evaluation)
    lint.py       the data linter behind tools/lint_data.py
"""
