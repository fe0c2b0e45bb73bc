"""detkit.weights: where a model's weights come from and go to.

    checkpoint.py     detkit checkpoints: atomic saves, loads that explain what is wrong, strict weight
                      loading with a report of missing / unexpected / reshaped keys, RNG states for resume
    trained_model.py  the detector a checkpoint was trained as (its config, classes and anchor shapes),
                      ready to serve (eval mode, BatchNorm folded, eval.precision)
"""
