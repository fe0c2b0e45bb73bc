"""detkit.evaluation: scoring detections and evaluating detectors.

    evaluator.py   COCO metrics (faster-coco-eval or pycocotools, identical numbers), VOC mAP@0.5,
                   confusion matrix, PR curves, the printed tables, COCO results JSON
    evaluate.py    run_evaluation (a model over a data set in memory, validation loss included) and
                   evaluate_checkpoint (a checkpoint on a split: what `detkit eval` does)
    precise_bn.py  BatchNorm statistics re-estimated with the weights to be evaluated

The training engine's evaluation hook calls this package; it never imports the engine.
"""
