"""The training loop: data -> step -> optimizer -> schedule, with every side job in a hook.

A run writes everything into one folder (``output.dir``): config.yaml (the resolved config, anchor
shapes included), metrics.jsonl, last.pt / best.pt, eval.json, detections.json, plots/*.png and,
with ``output.tensorboard``, TensorBoard event files. Which hook writes what: :func:`build_hooks`.

Resume is exact on the CPU: the checkpoint holds the model, optimizer, scheduler, iteration, the
torch RNG and the model's sampling generators (``Detector.rng_state_dict``), plus each hook's state;
the data order, augmentation and per-image sampling seeds are functions of (seed, epoch, position),
so the batches after iteration k are the ones the uninterrupted run saw.
"""

from __future__ import annotations

import os
import time
from typing import Callable, List, Optional, Union

import torch

from detkit.anchors import anchor_shapes_for_training
from detkit.atomic_io import remove_stale_temp_files
from detkit.config import Config, config_to_dict, load_config, save_config
from detkit.data.auto_split import SPLIT_FILE_NAME, auto_split_enabled, write_split
from detkit.data.loader import build_dataset, build_loader
from detkit.engine import hooks as H
from detkit.engine.optim import build_optimizer, build_scheduler
from detkit.engine.run_folder import check_run_folder, checkpoint_bytes
from detkit.errors import ConfigError
from detkit.modeling.detector import build_detector
from detkit.runtime import distributed as dist
from detkit.runtime.device import apply_cuda_settings, resolve_device
from detkit.runtime.precision import resolve_precision
from detkit.weights.checkpoint import load_weights, read_resume_checkpoint, restore_rng_states, rng_states

__all__ = ["Trainer", "build_hooks", "train"]

RUN_FILES = ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "eval.json", "detections.json")


def build_hooks(trainer: "Trainer") -> List[H.Hook]:
    """The run's side jobs, in the order they are called at every point of the loop."""
    cfg, main = trainer.cfg, trainer.ctx.is_main
    # First: no other hook sees a non-finite step. GPU losses are read every log_every steps only.
    hooks: List[H.Hook] = [H.NaNGuardHook(check_every=cfg.train.log_every)]
    if cfg.train.ema_decay is not None:
        ema = H.EMAHook(trainer.bare_model, cfg.train.ema_decay, cfg.train.ema_tau)
        trainer.eval_model = ema.model  # the average is what is evaluated and saved as "model"
        hooks.append(ema)
    if cfg.model.anchors.mode == "learned" and cfg.model.anchors.online_warmup:
        hooks.append(H.OnlineAnchorsHook())
    hooks.append(H.ProgressHook(quiet=trainer.quiet))
    # Precise BN (the statistics the evaluation uses and last.pt holds), then the evaluation.
    hooks += [H.PreciseBNHook(cfg.eval.precise_bn_batches), H.EvaluationHook(), H.BestCheckpointHook()]
    if cfg.train.keep_evaluated:
        hooks.append(H.EvaluatedWeightsHook())
    if main:  # the writers exist on rank 0 alone
        hooks.append(H.MetricsLogHook(trainer.paths["metrics.jsonl"], cfg.train.log_every))
        if cfg.output.tensorboard:
            hooks.append(H.TensorBoardHook(trainer.out, cfg.train.log_every))
        if cfg.output.plots:
            hooks.append(H.PlotsHook())  # reads metrics.jsonl and the final evaluation
    # last.pt at the very end of an epoch, once its evaluation, best.pt and records are written: a run
    # killed before it resumes from the previous last.pt and redoes the whole epoch (records after that
    # checkpoint are dropped), one killed after it has nothing of the epoch left to redo.
    hooks.append(H.LastCheckpointHook(cfg.train.checkpoint_every))
    return hooks


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
        if self.ctx.distributed and cfg.model.backbone.norm == "sync_bn" and self.device.type != "cuda":
            raise ConfigError("key 'model.backbone.norm' = 'sync_bn' synchronises BatchNorm over GPUs (torch's "
                              "SyncBatchNorm has no CPU version); on the CPU use 'bn' (per process) or 'frozen_bn'")
        self.iteration = self.start_epoch = self.epoch = 0
        self.best_value: Optional[float] = None
        self.last_good_checkpoint: Optional[str] = None
        self.metrics: Optional[dict] = None  # the latest evaluation ({} on ranks other than 0)
        self.stopped_early = False

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
        cfg.model.anchors.shapes = anchor_shapes_for_training(cfg, self.train_set, checkpoint, log=self.log)
        self.model = dist.prepare_model(build_detector(cfg, num_classes=len(self.classes)).to(self.device),
                                        cfg, self.device)
        self.eval_model = self.bare_model
        self.optimizer = build_optimizer(self.model, cfg.train)
        # Pinned batches on CUDA: the copies to the GPU in _step are then asynchronous.
        self.train_loader = build_loader(cfg, "train", dataset=self.train_set, distributed=self.ctx.distributed,
                                         pin_memory=self.device.type == "cuda")
        self.iters_per_epoch = len(self.train_loader)
        self.total_iters = cfg.train.epochs * self.iters_per_epoch
        self.scheduler = build_scheduler(self.optimizer, cfg.train, self.total_iters)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.uses_grad_scaler)
        self.log(f"precision: training {self.precision.name}, evaluation {self.eval_precision.name}; "
                 f"memory format {cfg.model.memory_format}")
        self.hooks = build_hooks(self)
        if self.ctx.is_main:  # a read-only or full disk fails now, not at the first checkpoint
            stale = remove_stale_temp_files(self.out, RUN_FILES + (SPLIT_FILE_NAME,))
            if stale:
                self.log(f"removed {len(stale)} temporary file(s) of writes a killed run left unfinished in {self.out}")
            copies = 1 if self.eval_model is self.bare_model else 2
            check_run_folder(self.out, checkpoint_bytes(self.bare_model, self.optimizer, weight_copies=copies))
        if checkpoint is not None:
            self._restore(checkpoint)
        if self.ctx.is_main and auto_split_enabled(cfg.data):
            # The split in the run folder; the saved config points at it, so evaluating or resuming this run
            # uses exactly these images whatever happens to the folder listing.
            split_path = os.path.join(self.out, SPLIT_FILE_NAME)
            write_split(split_path, self.train_set, self.val_set, val_fraction=cfg.data.auto_split.val_fraction,
                        seed=cfg.data.auto_split.seed)
            cfg.data.auto_split.file = split_path
            self.log(f"data: automatic split, {len(self.train_set)} training / {len(self.val_set)} validation "
                     f"images, written to {split_path}")
        if self.ctx.is_main:
            save_config(cfg, self.paths["config.yaml"])
        self.log(f"batch: {self.ctx.local_batch(cfg.train.batch_size)} per process x {self.ctx.world_size} "
                 f"process(es) = {cfg.train.batch_size} global; {self.iters_per_epoch} iterations per epoch, "
                 f"{self.total_iters} in all")

    def _restore(self, ckpt: dict) -> None:
        # With a moving average, "model" holds the average and "train_model" the trained weights.
        load_weights(self.bare_model, ckpt.get("train_model", ckpt["model"]), self.paths["last.pt"])
        if "train_model" in ckpt and self.eval_model is self.bare_model:
            self.log("weights: the checkpoint's moving average is dropped (train.ema_decay is now off); "
                     "training continues from its trained weights")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("grad_scaler"):  # fp16 runs: the loss scale the run had reached
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        self.iteration, self.start_epoch = int(ckpt["iteration"]), int(ckpt["epoch"])
        self.epoch = self.start_epoch
        self.best_value = ckpt.get("best", {}).get("value")
        restore_rng_states(ckpt.get("rng", {}), self.bare_model)
        self.last_good_checkpoint = self.paths["last.pt"]
        for hook in self.hooks:
            hook.load_checkpoint(self, ckpt)
        self.log(f"resumed from {self.paths['last.pt']} at epoch {self.start_epoch}, iteration {self.iteration}")

    def checkpoint_state(self, epoch: int) -> dict:
        """Everything a resume needs, and what evaluation and inference read (``model``: the evaluated weights)."""
        state = {
            "model": self.eval_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "grad_scaler": self.scaler.state_dict(),
            "epoch": epoch, "iteration": self.iteration,
            "rng": rng_states(self.bare_model),
            "config": config_to_dict(self.cfg), "classes": self.classes,
            "category_ids": list(self.train_set.category_ids), "anchor_shapes": self.cfg.model.anchors.shapes,
            # "online_anchors" is always present, as before the hooks (the online-anchors hook fills it in).
            "best": {"metric": self.cfg.eval.best_metric, "value": self.best_value}, "online_anchors": None,
            # What train.precision / eval.precision resolved to on this machine ("auto" stays in the config).
            "precision": {"train": self.precision.name, "eval": self.eval_precision.name},
        }
        for hook in self.hooks:
            state.update(hook.checkpoint_state(self))
        return state

    def broadcast(self, point: str, *args) -> None:
        """Call ``point`` (a :class:`detkit.engine.hooks.Hook` method) on every hook, in order."""
        for hook in self.hooks:
            getattr(hook, point)(self, *args)

    def run(self) -> dict:
        """Train for ``train.epochs`` (or until ``train.max_iters``), evaluate, plot; return eval metrics."""
        started = time.perf_counter()
        self.setup()
        self.broadcast("before_train")
        for self.epoch in range(self.start_epoch, self.cfg.train.epochs):
            end = self._train_epoch(self.epoch)
            self.stopped_early = end.stopped_early
            self.broadcast("after_epoch", end)
            if end.stopped_early:
                break
        self.broadcast("after_train")
        # The budget a user sets is wall time: set-up (data scan, anchor fit), training and evaluations.
        minutes = (time.perf_counter() - started) / 60
        self.log(f"wall time {minutes:.2f} min (this session: set-up, training, evaluations); outputs in {self.out}")
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
        last = epoch + 1 == cfg.train.epochs
        seconds = time.perf_counter() - tic
        return H.EpochEnd(index=epoch, completed=epoch if stopped else epoch + 1, stopped_early=stopped,
                          evaluate=not stopped and (last or bool(cfg.train.eval_every and
                                                                 (epoch + 1) % cfg.train.eval_every == 0)),
                          last=last, seconds=seconds, img_per_s=seen / max(seconds, 1e-9))

    def _step(self, images: list, targets: list) -> H.StepLosses:
        """One optimizer step; returns every loss (mean over processes) and their sum ``loss``, read lazily.

        On CUDA nothing here waits for the GPU except what the model's data-dependent shapes need
        (listed in README.md, "Training on a GPU") and, with fp16, the gradient scaler's inf check;
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
    """Train as ``cfg`` (a Config, or the path of a YAML config) says, as ``tools/train.py`` does;
    returns the final evaluation metrics (eval.json's content)."""
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    resolve_device(cfg.train.device, key="train.device")  # before the process group, data report and anchors
    dist.init_from_env(cfg.train.device)
    try:
        return Trainer(cfg, resume=resume, quiet=quiet, log=log).run()
    finally:
        dist.cleanup()
