"""detkit.weights: where a model's weights come from and go to.

    checkpoint.py     detkit checkpoints: atomic saves, loads that explain what is wrong, strict weight
                      loading with a report of missing / unexpected / reshaped keys, RNG states for resume
    trained_model.py  the detector a checkpoint was trained as (its config, classes and anchor shapes),
                      ready to serve (eval mode, BatchNorm folded, eval.precision)
    start.py          model.weights read (a detkit checkpoint, a torchvision detection file or name) and
                      transferred into a new run's detector; the warning for frozen layers without weights
    transfer.py       class-aware transfer: same-name, same-shape tensors, the box predictor's rows per
                      class name (model.class_map first); the TransferReport a run writes as transfer.json
"""
