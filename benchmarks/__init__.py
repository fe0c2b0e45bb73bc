"""Speed and memory comparisons of detkit against its peers (torchvision, pycocotools); results in results/.

Run each from the repository root as a module (``--help`` lists its options); each writes figures only
where told (``--json``/``--out``), and the committed write-ups are under ``benchmarks/results/``:

    python -m benchmarks.bench_nms       detkit.ops.nms vs torchvision's nms / batched_nms (CPU)
    python -m benchmarks.bench_matching  detkit's anchor matching vs torchvision's box_iou + Matcher (CPU)
    python -m benchmarks.bench_model     detkit's detector vs torchvision's FasterRCNN on a synthetic batch
    python -m benchmarks.bench_train     protocol P1 training and inference speed on BCCD, detkit vs torchvision
    python -m benchmarks.bench_data      loader throughput on BCCD at num_workers 0 and 2
    python -m benchmarks.bench_export    CPU inference: torchvision eager vs detkit eager, TorchScript, ONNX Runtime
    python -m benchmarks.bench_gpu       detkit vs torchvision's fasterrcnn_resnet50_fpn on one GPU with AMP
    python -m benchmarks.bench_scale     COCO-scale indexing, loader memory, anchors, linting, evaluation vs peers
    bash benchmarks/gpu_check.sh         the whole GPU check: tests/test_cuda.py, then bench_gpu

Modules the benchmarks import (not run on their own):

    bench_variants.py   the fp32 / fast (bf16 + channels_last) variants of bench_model and bench_train
    scale_data.py       bench_scale's seeded COCO- and VOC-shaped annotation sets
    peer_dataset.py     bench_scale's loader peer: a torchvision-reference-style dict-per-image data set

Scripts that are not comparisons (data-set derivers, report builders, the torchvision reference run,
the kill/resume check) are in ``scripts/``.
"""
