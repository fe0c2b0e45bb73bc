"""detkit.engine: training only.

    trainer.py      Trainer and train(): the loop (data -> step -> optimizer -> schedule); every side job is a hook
    hook_list.py    build_hooks: which hooks a run has, in what order
    resolved.py     what a run resolves as it starts (anchor shapes, split file) and the config.yaml holding them
    resume.py       a run's checkpoint: what it holds, and how a run comes back from it
    hooks/          the side jobs: NaN guard, EMA, online anchors, progress, precise BN + evaluation,
                    checkpoints, metrics.jsonl, TensorBoard, plots (see hooks/__init__.py)
    optim.py        optimizer and LR schedule from the train section
    ema.py          the moving average of the weights
    run_folder.py   the output folder checked before training (writable, room for the checkpoints)
    metrics_log.py  metrics.jsonl: reading it, and dropping the records a resume repeats
    step_profile.py where a training step's time goes (used by benchmarks/bench_train.py)

Evaluation (detkit.evaluation) and deployment (detkit.deploy) are packages of their own; the
evaluation hook calls the former.
"""
