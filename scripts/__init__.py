"""Scripts around detkit's runs that are not speed comparisons (those are in ``benchmarks/``).

Run each from the repository root as a module (``--help`` lists its options):

    python -m scripts.mosaic_voc          derive a VOC set of 2x2 mosaics (smaller objects, fewer classes)
    python -m scripts.object_crops_voc    derive a VOC set of crops around one class's objects (larger objects)
    python -m scripts.train_torchvision_p1  train torchvision's Faster R-CNN under protocol P1 (the reference run)
    python -m scripts.p1_report           Markdown summary of finished runs (mAP, per-class AP, speed, changes)
    python -m scripts.recipe_report       time-to-accuracy curves of runs on a held-out split (table, plot, JSON)
    python -m scripts.eval_settings       inference settings of one checkpoint compared on a split
    python -m scripts.check_kill_resume   kill-safety: a run SIGKILLed at random moments ends as if never killed

Modules the scripts import (not run on their own):

    run_records.py   a run folder's metrics.jsonl records (p1_report, recipe_report)
"""
