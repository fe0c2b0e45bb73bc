"""detkit.data: data sets (VOC, COCO, YOLO, built-in synthetic), transforms, loaders, linter.

Modules (import what you need; nothing is imported here, so ``import detkit.data`` stays light):

    dataset.py        DetectionDataset base, the sample format every data set returns, image probing
    index.py          AnnotationIndex: all annotations as flat arrays (shared by workers); ImageRecord
    report.py         DataReport: every fix counted, summarised once per data set
    sanitize.py       sanitize_boxes / sanitize_groups: drop degenerate, clip, de-duplicate boxes (one
                      vectorised implementation)
    image_io.py       read_image (any image kind -> RGB uint8, EXIF applied), header sizes, truncation
    jpeg_header.py    a fast reader of plain JPEG headers (size, EXIF orientation)
    voc.py            VOCDataset (official layout and any folder of VOC XML), VOC pixel convention
    coco.py           COCODataset, COCO box convention, category id <-> label mapping
    coco_tables.py    a COCO JSON as arrays, parsed once and cached beside the file
    yolo.py           YOLODataset: image files with one text line per box
    synthetic.py      prepare_synthetic: the deterministic shapes set, cached as images + COCO JSON
    formats.py        build_dataset: the format table (data.format -> reader) for a split
    auto_split.py     data.auto_split: a stratified, reproducible train / val split; split.json
    transforms.py     build_transforms: train / test presets, torchvision's resize rule, seeding
    samplers.py       aspect-ratio grouped and sharded batch samplers (DDP-ready)
    loader.py         build_loader, TransformedDataset, collate, DetectionLoader
    resized_boxes.py  resized_annotations: the training boxes after the training resize (anchor fitting)
    coco_export.py    any data set -> COCO JSON (`detkit convert`, ground truth for evaluation)
    lint.py           the data linter behind `detkit lint`
"""
