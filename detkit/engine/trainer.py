"""The training loop: data -> step -> optimizer -> schedule, with every side job in a hook.

A run writes everything into one folder (``output.dir``): config.yaml (the resolved config, anchor
shapes included), metrics.jsonl, last.pt / best.pt, eval.json, detections.json, plots/*.png and,
with ``output.tensorboard``, TensorBoard event files (which hook writes what: :mod:`detkit.engine.hook_list`),
and with ``model.weights`` transfer.json (what the start weights gave: :mod:`detkit.weights.start`), and
setup.json (data reports, anchors, device: :mod:`detkit.engine.setup_record`, read by the run report).
What the run resolves (anchor shapes, split file) stays in its state (:mod:`detkit.engine.resolved`): the
Config it was given is never changed.

Resume is exact on the CPU: the checkpoint holds the model, optimizer, scheduler, iteration, the
torch RNG and the model's sampling generators (``Detector.rng_state_dict``), plus each hook's state;
the data order, augmentation and per-image sampling seeds are functions of (seed, epoch, position),
so the batches after iteration k are the ones the uninterrupted run saw.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Optional, Union

import torch

from detkit.anchors import AnchorSetup
from detkit.config import Config, load_config, replace_values, save_config
from detkit.data.auto_split import SPLIT_FILE_NAME
from detkit.data.formats import build_dataset
from detkit.data.loader import build_loader
from detkit.engine import hooks as H
from detkit.engine.hook_list import build_hooks
from detkit.engine.optim import build_optimizer, build_scheduler, resize_scheduler
from detkit.engine.resolved import resolved_config, run_anchor_shapes, write_run_split
from detkit.engine.resume import restore_run, run_state
from detkit.engine.run_folder import checkpoint_bytes, prepare_run_folder, run_folder_summary
from detkit.engine.setup_record import SETUP_FILE_NAME, write_setup_record
from detkit.modeling.detector import build_detector
from detkit.runtime import distributed as dist
from detkit.runtime.device import apply_cuda_settings, resolve_device
from detkit.runtime.memory_format import resolve_memory_format
from detkit.runtime.precision import resolve_precision
from detkit.weights.checkpoint import read_resume_checkpoint
from detkit.weights.start import apply_start_weights, frozen_layers_warning
from detkit.weights.transfer import TransferReport, write_transfer_report

__all__ = ["Trainer", "train"]

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "eval.json", "detections.json", "transfer.json",
             SETUP_FILE_NAME)


class Trainer:
    """Trains one detector as ``cfg`` says; ``run()`` returns the final evaluation metrics."""

    def __init__(self, cfg: Config, *, resume: bool = False, quiet: bool = False,
                 log: Callable[[str], None] = print) -> None:
        self.cfg, self.resume, self.quiet = cfg, resume, quiet
        self.ctx = dist.get_context()
        self.log = log if self.ctx.is_main else (lambda *_: None)
        self.out = cfg.output.dir
        self.paths = {name: os.path.join(self.out, name) for name in RUN_FILES}
        # Checked before anything runs: no GPU for train.device = cuda is one error, not a traceback later.
        self.device = resolve_device(cfg.train.device, key="train.device",
                                     local_rank=self.ctx.local_rank if self.ctx.distributed else None)
        dist.check_norm_for_device(cfg.model.backbone.norm, self.device, cfg.model.backbone.fpn_norm)
        self.iteration = self.start_epoch = self.epoch = 0
        self.epochs = cfg.train.epochs  # the run's length: train.epochs, or a train.time_budget plan
        # The wall-time clock of train.time_budget: this session's start, and what earlier sessions spent.
        self.started, self.spent_before = time.perf_counter(), 0.0
        self.best_value: Optional[float] = None
        self.last_good_checkpoint: Optional[str] = None
        self.metrics: Optional[dict] = None  # the latest evaluation ({} on ranks other than 0)
        self.stopped_early = False
        self.anchor_shapes: Optional[list] = None  # L x A x [w, h], resolved in setup (changed by online anchors)
        self.split_file: Optional[str] = None  # the automatic split written into the run folder
        self.transfer_report: Optional[TransferReport] = None  # what model.weights gave (not on a resume)

    @property
    def bare_model(self) -> torch.nn.Module:
        """The detector without its DistributedDataParallel wrapper."""
        return getattr(self.model, "module", self.model)

    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)
        apply_cuda_settings(self.device, cudnn_benchmark=cfg.train.cudnn_benchmark)
        self.precision = resolve_precision(cfg.train.precision, self.device, key="train.precision", log=self.log)
        self.eval_precision = resolve_precision(cfg.eval.precision, self.device, key="eval.precision",
                                                log=self.log)
        checkpoint = read_resume_checkpoint(self.paths["last.pt"]) if self.resume else None
        self.train_set = build_dataset(cfg, "train")  # each data set reports its fixes once while loading
        self.val_set = build_dataset(cfg, "val", classes=self.train_set.classes)
        self.classes = list(self.train_set.classes)
        self.log(f"data: {len(self.train_set)} training images, {len(self.val_set)} validation images, "
                 f"classes {self.classes}")
        self.anchor_setup = AnchorSetup.from_config(cfg)
        self.anchor_shapes = run_anchor_shapes(cfg.model.anchors, self.anchor_setup, self.train_set, checkpoint,
                                               log=self.log)
        warning = frozen_layers_warning(cfg)
        if warning:
            self.log(warning)
        # A resume takes every weight from last.pt: the start weights' files are not read again (nor needed).
        build_cfg = cfg if checkpoint is None else replace_values(cfg, {"model.backbone.weights": None})
        detector = build_detector(build_cfg, num_classes=len(self.classes), anchor_shapes=self.anchor_shapes)
        # model.memory_format auto: the layout that trains fastest in this run's precision (the EMA copy and
        # the evaluations inherit it).
        self.memory_format = resolve_memory_format(cfg.model.memory_format, self.precision, training=True)
        detector.set_memory_format(self.memory_format)
        if cfg.model.weights and checkpoint is None:
            self.transfer_report = apply_start_weights(detector, cfg, self.classes, log=self.log)
        self.model = dist.prepare_model(detector.to(self.device), cfg, self.device)
        self.eval_model = self.bare_model
        self.optimizer = build_optimizer(self.model, cfg.train)
        # Pinned batches on CUDA: the copies to the GPU in _step are then asynchronous.
        self.train_loader = build_loader(cfg, "train", dataset=self.train_set, distributed=self.ctx.distributed,
                                         pin_memory=self.device.type == "cuda")
        self.iters_per_epoch = len(self.train_loader)
        self.total_iters = self.epochs * self.iters_per_epoch
        self.scheduler = build_scheduler(self.optimizer, cfg.train, self.total_iters)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.uses_grad_scaler)
        self.log(f"precision: training {self.precision.name}, evaluation {self.eval_precision.name}; "
                 f"memory format {self.memory_format}"
                 + (" (model.memory_format: auto)" if cfg.model.memory_format == "auto" else ""))
        self.hooks = build_hooks(self)
        if self.ctx.is_main:  # a read-only or full disk fails now, not at the first checkpoint
            copies = 1 if self.eval_model is self.bare_model else 2
            prepare_run_folder(self.out, RUN_FILES + (SPLIT_FILE_NAME,), log=self.log,
                               needed_bytes=checkpoint_bytes(self.bare_model, self.optimizer, weight_copies=copies))
        if checkpoint is not None:
            restore_run(self, checkpoint)
        if self.ctx.is_main:
            self.split_file = write_run_split(cfg.data, self.out, self.train_set, self.val_set, log=self.log)
            save_config(self.resolved_config(), self.paths["config.yaml"])
            if self.transfer_report is not None:
                write_transfer_report(self.transfer_report, self.paths["transfer.json"])
            write_setup_record(self, resumed=checkpoint is not None)
        self.log(f"batch: {self.ctx.local_batch(cfg.train.batch_size)} per process x {self.ctx.world_size} "
                 f"process(es) = {cfg.train.batch_size} global; {self.iters_per_epoch} iterations per epoch, "
                 f"{self.total_iters} in all")

    def resolved_config(self) -> Config:
        """The run's config with what it resolved (anchor shapes, split file, a time-budget plan's epoch
        count) filled in: config.yaml's content."""
        return resolved_config(self.cfg, self.anchor_shapes, self.split_file, epochs=self.epochs)

    def set_epochs(self, epochs: int, *, write_config: bool = True) -> None:
        """Train for ``epochs`` epochs in all (a train.time_budget plan: :mod:`detkit.engine.hooks.time_budget`):
        the LR schedule is rebuilt for the new length at the current iteration, config.yaml records it."""
        self.epochs, self.total_iters = epochs, epochs * self.iters_per_epoch
        self.scheduler = resize_scheduler(self.scheduler, self.optimizer, self.cfg.train, self.total_iters)
        if write_config and self.ctx.is_main:
            save_config(self.resolved_config(), self.paths["config.yaml"])

    def seconds_spent(self) -> float:
        """The run's wall time so far: this session from set-up on, plus earlier sessions (up to their checkpoint)."""
        return self.spent_before + time.perf_counter() - self.started

    def checkpoint_state(self, epoch: int) -> dict:
        """Everything a resume needs, and what evaluation and inference read (``model``: the evaluated weights)."""
        return run_state(self, epoch)

    def broadcast(self, point: str, *args) -> None:
        """Call ``point`` (a :class:`detkit.engine.hooks.Hook` method) on every hook, in order."""
        for hook in self.hooks:
            getattr(hook, point)(self, *args)

    def run(self) -> dict:
        """Train for ``train.epochs`` (or a ``train.time_budget`` plan; stopped by ``train.max_iters``), evaluate,
        plot; return eval metrics."""
        self.started = started = time.perf_counter()
        self.setup()
        self.broadcast("before_train")
        epoch = self.start_epoch
        while epoch < self.epochs:  # a time-budget plan may change self.epochs while training
            self.epoch = epoch
            end = self._train_epoch(self.epoch)
            self.stopped_early = end.stopped_early
            self.broadcast("after_epoch", end)
            if end.stopped_early:
                break
            epoch += 1
        self.broadcast("after_train")
        # The budget a user sets is wall time: set-up (data scan, anchor fit), training and evaluations.
        minutes = (time.perf_counter() - started) / 60
        self.log(f"wall time {minutes:.2f} min (this session: set-up, training, evaluations); outputs in {self.out}")
        self.log(run_folder_summary(self.out))  # what the run leaves on disk (best.pt: weights only)
        if self.cfg.train.time_budget is not None:
            self.log(f"time budget: {self.seconds_spent() / 60:.2f} of {self.cfg.train.time_budget:.1f} min used "
                     f"(all sessions), {self.epochs} epochs")
        return self.metrics

    def _train_epoch(self, epoch: int) -> H.EpochEnd:
        cfg = self.cfg
        max_iters = cfg.train.max_iters if cfg.train.max_iters is not None else float("inf")
        self.model.train()
        self.train_loader.set_epoch(epoch)
        # Resuming mid-epoch: the epoch's batch order is a function of (seed, epoch), so skipping the
        # batches already trained on (without loading them) continues exactly where the run stopped.
        self.train_loader.batch_sampler.set_skip(max(0, self.iteration - epoch * self.iters_per_epoch))
        self.broadcast("before_epoch", epoch)
        tic, seen = time.perf_counter(), 0
        for images, targets in self.train_loader:
            if self.iteration >= max_iters:
                break
            losses = self._step(images, targets)
            self.iteration += 1
            seen += len(images) * self.ctx.world_size
            rate = seen / max(time.perf_counter() - tic, 1e-9)
            self.broadcast("after_step", H.StepInfo(epoch=epoch + 1, iteration=self.iteration, losses=losses,
                                                    lr=self.optimizer.param_groups[0]["lr"], img_per_s=rate))
        stopped = self.iteration >= max_iters and self.iteration < (epoch + 1) * self.iters_per_epoch
        last = epoch + 1 == self.epochs
        seconds = time.perf_counter() - tic
        return H.EpochEnd(index=epoch, completed=epoch if stopped else epoch + 1, stopped_early=stopped,
                          evaluate=not stopped and (last or bool(cfg.train.eval_every and
                                                                 (epoch + 1) % cfg.train.eval_every == 0)),
                          last=last, seconds=seconds, img_per_s=seen / max(seconds, 1e-9))

    def _step(self, images: list, targets: list) -> H.StepLosses:
        """One optimizer step; returns every loss (mean over processes) and their sum ``loss``, read lazily.

        On CUDA nothing here waits for the GPU except what the model's data-dependent shapes need
        (listed in docs/gpu.md) and, with fp16, the gradient scaler's inf check;
        the loss values stay on the device until a hook reads them (every train.log_every steps).
        """
        images = [img.to(self.device, non_blocking=True) for img in images]
        targets = [{k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
                   for t in targets]
        self.broadcast("before_step", images, targets)
        with self.precision.autocast():  # weights, gradients and optimizer state stay fp32
            loss_dict = self.model(images, targets)
        loss = sum(loss_dict.values())
        names = sorted(loss_dict)
        values = H.StepLosses(names, dist.mean_over_processes(torch.stack([loss_dict[k].detach().float()
                                                                            for k in names])))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return values


def train(cfg: Union[Config, str], *, resume: bool = False, quiet: bool = False,
          log: Callable[[str], None] = print) -> dict:
    """Train as ``cfg`` (a Config, or the path of a YAML config) says, as ``detkit train`` does;
    returns the final evaluation metrics (eval.json's content)."""
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    resolve_device(cfg.train.device, key="train.device")  # before the process group, data report and anchors
    dist.init_from_env(cfg.train.device)
    try:
        return Trainer(cfg, resume=resume, quiet=quiet, log=log).run()
    finally:
        dist.cleanup()
