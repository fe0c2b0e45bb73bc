"""detkit.engine.hooks: the training loop's side jobs, one small object each.

    base.py            Hook (the call points) and the events: StepInfo, EpochEnd, Evaluation
    nan_guard.py       NaNGuardHook: stop at the first non-finite loss
    ema.py             EMAHook: moving average of the weights, evaluated and saved
    online_anchors.py  OnlineAnchorsHook: learned anchors refined during the LR warm-up
    progress.py        ProgressHook: the progress bar and the epoch summary line
    evaluation.py      PreciseBNHook, EvaluationHook: BatchNorm statistics, COCO evaluation, eval.json
    checkpoints.py     LastCheckpointHook, BestCheckpointHook, EvaluatedWeightsHook: last.pt, best.pt,
                       evaluated/epoch_NNN.pt
    records.py         the logged records, shared by the sinks below
    metrics_jsonl.py   MetricsLogHook: metrics.jsonl
    tensorboard.py     TensorBoardHook: event files (output.tensorboard)
    time_budget.py     TimeBudgetHook: the epoch count planned to fit train.time_budget
    plots.py           PlotsHook: plots/*.png

Which hooks a run has, and in what order, is decided in one place:
:func:`detkit.engine.hook_list.build_hooks`.
"""

from detkit.engine.hooks.base import EpochEnd, Evaluation, Hook, StepInfo, StepLosses
from detkit.engine.hooks.checkpoints import BestCheckpointHook, EvaluatedWeightsHook, LastCheckpointHook
from detkit.engine.hooks.ema import EMAHook
from detkit.engine.hooks.evaluation import EvaluationHook, PreciseBNHook
from detkit.engine.hooks.metrics_jsonl import MetricsLogHook
from detkit.engine.hooks.nan_guard import NaNGuardHook
from detkit.engine.hooks.online_anchors import OnlineAnchorsHook
from detkit.engine.hooks.plots import PlotsHook
from detkit.engine.hooks.progress import ProgressHook
from detkit.engine.hooks.tensorboard import TensorBoardHook
from detkit.engine.hooks.time_budget import TimeBudgetHook

__all__ = [
    "Hook", "StepInfo", "StepLosses", "EpochEnd", "Evaluation", "NaNGuardHook", "EMAHook", "OnlineAnchorsHook",
    "ProgressHook",
    "PreciseBNHook", "EvaluationHook", "LastCheckpointHook", "BestCheckpointHook",
    "EvaluatedWeightsHook", "MetricsLogHook",
    "TensorBoardHook", "PlotsHook", "TimeBudgetHook",
]
