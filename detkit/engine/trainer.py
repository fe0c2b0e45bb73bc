"""The training loop: optimizer, warm-up + schedule, AMP on CUDA, gradient clipping, NaN guard,
metrics.jsonl, periodic COCO evaluation (preceded by precise BatchNorm statistics,
``eval.precise_bn_batches``), last.pt / best.pt, exact resume.

A run writes everything into one folder (``output.dir``)::

    config.yaml      the resolved config (anchor shapes included)
    metrics.jsonl    one line every ``train.log_every`` iterations ("train"), one per evaluation ("eval")
    last.pt          the latest checkpoint; best.pt the best by ``eval.best_metric``
    eval.json        the final evaluation; detections.json its detections (COCO results format)
    plots/*.png      loss, LR, precision-recall curves, confusion matrix

Resume is exact on the CPU: the checkpoint holds the model, optimizer, scheduler, iteration, the
torch RNG and the model's sampling generators (``Detector.rng_state_dict``); the data order,
augmentation and per-image sampling seeds are functions of (seed, epoch, position), so the batches
after iteration k are the ones the uninterrupted run saw. metrics.jsonl loses the records logged
after the checkpoint (:mod:`detkit.engine.metrics_log`), so it too reads as the uninterrupted run's.

Learned anchors with ``model.anchors.online_warmup: true`` are refined on each batch of the LR
warm-up and then frozen (:mod:`detkit.engine.online_anchors`); a checkpoint written during the
warm-up holds that fit's state, and config.yaml is rewritten with the frozen shapes.

With ``train.ema_decay`` set, a moving average of the weights (:mod:`detkit.engine.ema`) is what gets
precise BatchNorm statistics, evaluated, and saved as the checkpoints' ``model``; the trained weights
are saved beside it as ``train_model`` for resume.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Callable, Optional

import torch
from tqdm import tqdm

from detkit.config import Config, config_to_dict, save_config
from detkit.engine import distributed as dist
from detkit.engine.anchor_setup import resolve_anchor_shapes
from detkit.engine.online_anchors import OnlineAnchorWarmup
from detkit.engine.checkpoint import load_checkpoint, save_checkpoint
from detkit.engine.ema import ModelEMA
from detkit.engine.inference import run_evaluation
from detkit.engine.metrics_log import drop_records_after
from detkit.engine.optim import build_optimizer, build_scheduler
from detkit.engine.precise_bn import refresh_detector_bn_stats
from detkit.errors import CheckpointError, TrainingError
from detkit.modeling.detector import build_detector
from detkit.data.loader import build_dataset, build_loader

__all__ = ["Trainer"]


class Trainer:
    """Trains one detector as ``cfg`` says; ``run()`` returns the final evaluation metrics."""

    def __init__(self, cfg: Config, *, resume: bool = False, quiet: bool = False,
                 log: Callable[[str], None] = print) -> None:
        self.cfg = cfg
        self.resume = resume
        self.quiet = quiet
        self.ctx = dist.get_context()
        self.log = log if self.ctx.is_main else (lambda *_: None)
        self.out = cfg.output.dir
        self.paths = {name: os.path.join(self.out, name) for name in
                      ("config.yaml", "metrics.jsonl", "last.pt", "best.pt", "eval.json", "detections.json")}
        self.device = torch.device(cfg.train.device)
        self.iteration = 0
        self.start_epoch = 0
        self.best_value: Optional[float] = None
        self.last_good_checkpoint: Optional[str] = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)
        checkpoint = self._read_resume_checkpoint() if self.resume else None
        self.train_set = build_dataset(cfg, "train")
        self.val_set = build_dataset(cfg, "val", classes=self.train_set.classes)
        self.classes = list(self.train_set.classes)
        self.log(f"data: {len(self.train_set)} training images, {len(self.val_set)} validation images, "
                 f"classes {self.classes}")
        # Each data set has already reported its fixes once (detkit.data logger) while loading.
        if checkpoint is not None:
            cfg.model.anchors.shapes = [[list(map(float, wh)) for wh in level] for level in checkpoint["anchor_shapes"]]
        elif cfg.model.anchors.shapes is None:
            cfg.model.anchors.shapes = dist.broadcast_object(
                resolve_anchor_shapes(cfg, self.train_set, log=self.log) if self.ctx.is_main else None)
        self.model = build_detector(cfg, num_classes=len(self.classes)).to(self.device)
        self.model = dist.prepare_model(self.model, cfg, self.device)
        self.optimizer = build_optimizer(self.model, cfg.train)
        self.iters_per_epoch = self._iters_per_epoch()
        self.total_iters = cfg.train.epochs * self.iters_per_epoch
        self.scheduler = build_scheduler(self.optimizer, cfg.train, self.total_iters)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self._amp)
        self.ema = self._build_ema()
        if checkpoint is not None:
            self._restore(checkpoint)
        self.online_anchors = self._online_anchors(checkpoint)
        if self.ctx.is_main:
            os.makedirs(self.out, exist_ok=True)
            save_config(cfg, self.paths["config.yaml"])
            if checkpoint is not None:
                dropped = drop_records_after(self.paths["metrics.jsonl"], self.iteration)
                if dropped:
                    self.log(f"metrics.jsonl: dropped {dropped} record(s) logged after the checkpoint's iteration "
                             f"{self.iteration} (work lost when the run stopped; it is trained again now)")
        self.log(f"batch: {self.ctx.local_batch(cfg.train.batch_size)} per process x {self.ctx.world_size} "
                 f"process(es) = {cfg.train.batch_size} global; {self.iters_per_epoch} iterations per epoch, "
                 f"{self.total_iters} in all")

    def _build_ema(self) -> Optional[ModelEMA]:
        """The moving average of the weights (``train.ema_decay``), or None when it is off."""
        if self.cfg.train.ema_decay is None:
            return None
        ema = ModelEMA(self._bare_model, self.cfg.train.ema_decay, self.cfg.train.ema_tau)
        # Anchor shapes are not state: share the generator, so that shapes installed in the trained
        # model (learned anchors refined online) are the ones the average is evaluated with.
        ema.model.rpn.anchor_generator = self._bare_model.rpn.anchor_generator
        self.log(f"weights: evaluated and saved as their moving average (decay {ema.decay}, "
                 f"ramp {ema.tau:g} iterations)")
        return ema

    @property
    def _eval_model(self) -> torch.nn.Module:
        """The weights that are evaluated and saved as ``model``: the moving average when on."""
        return self._bare_model if self.ema is None else self.ema.model

    def _online_anchors(self, checkpoint: Optional[dict]) -> Optional[OnlineAnchorWarmup]:
        """The online anchor refinement of a learned-anchor run still in its warm-up, or None."""
        if self.iteration >= min(self.cfg.train.warmup_iters, self.total_iters):
            return None
        online = OnlineAnchorWarmup.create(self.cfg, self.cfg.model.anchors.shapes, self.train_set,
                                           self._bare_model.rpn.anchor_generator)
        if online is not None and checkpoint is not None:
            if checkpoint.get("online_anchors") is not None:
                online.load_state_dict(checkpoint["online_anchors"])
            else:
                self.log("anchors: the checkpoint holds no online refinement state; the online fit restarts "
                         "from its anchors")
        if online is not None:
            self.log(f"anchors: refined online on each batch of the first {self.cfg.train.warmup_iters} "
                     f"iterations (LR warm-up), then frozen")
        return online

    def _freeze_online_anchors(self) -> None:
        """End of the warm-up: keep the online result or the starting shapes, record them, stop refining."""
        shapes = self.online_anchors.finish(log=self.log)
        self.cfg.model.anchors.shapes = shapes
        self.online_anchors = None
        if self.ctx.is_main:
            save_config(self.cfg, self.paths["config.yaml"])

    @property
    def _amp(self) -> bool:
        return self.cfg.train.amp and self.device.type == "cuda"

    @property
    def _bare_model(self) -> torch.nn.Module:
        return getattr(self.model, "module", self.model)

    def _iters_per_epoch(self) -> int:
        self.train_loader = build_loader(self.cfg, "train", dataset=self.train_set, distributed=self.ctx.distributed)
        return len(self.train_loader)

    def _read_resume_checkpoint(self) -> dict:
        path = self.paths["last.pt"]
        if not os.path.exists(path):
            raise CheckpointError(f"--resume: no checkpoint to resume from at '{path}' "
                                  f"(set output.dir / --output-dir to the folder of the run to continue)")
        return load_checkpoint(path)

    def _restore(self, ckpt: dict) -> None:
        # With the EMA on, "model" holds the average and "train_model" the trained weights.
        trained = ckpt.get("train_model", ckpt["model"])
        try:
            self._bare_model.load_state_dict(trained)
            if self.ema is not None:
                self.ema.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint '{self.paths['last.pt']}' does not match the configured model: "
                                  f"{exc}") from None
        if self.ema is not None:
            if "train_model" in ckpt:
                self.ema.updates = int(ckpt.get("ema_updates", ckpt["iteration"]))
            else:
                self.log("weights: the checkpoint has no moving average (train.ema_decay was off); "
                         "the average starts from its weights")
        elif "train_model" in ckpt:
            self.log("weights: the checkpoint's moving average is dropped (train.ema_decay is now off); "
                     "training continues from its trained weights")
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.iteration = int(ckpt["iteration"])
        self.start_epoch = int(ckpt["epoch"])
        self.best_value = ckpt.get("best", {}).get("value")
        rng = ckpt.get("rng", {})
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if "model" in rng:
            self._bare_model.load_rng_state_dict(rng["model"])
        self.last_good_checkpoint = self.paths["last.pt"]
        self.log(f"resumed from {self.paths['last.pt']} at epoch {self.start_epoch}, iteration {self.iteration}")

    # ------------------------------------------------------------------ checkpoints and logs
    def _checkpoint_state(self, epoch: int) -> dict:
        rng = {"torch": torch.get_rng_state(), "model": self._bare_model.rng_state_dict()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "model": self._eval_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": epoch, "iteration": self.iteration, "rng": rng,
            "config": config_to_dict(self.cfg), "classes": self.classes,
            "category_ids": list(self.train_set.category_ids), "anchor_shapes": self.cfg.model.anchors.shapes,
            "best": {"metric": self.cfg.eval.best_metric, "value": self.best_value},
            "online_anchors": None if self.online_anchors is None else self.online_anchors.state_dict(),
            **({} if self.ema is None else {"train_model": self._bare_model.state_dict(),
                                            "ema_updates": self.ema.updates}),
        }

    def _save(self, name: str, epoch: int) -> None:
        if not self.ctx.is_main:
            return
        save_checkpoint(self._checkpoint_state(epoch), self.paths[name])
        if name == "last.pt":
            self.last_good_checkpoint = self.paths[name]

    def _write_metrics(self, record: dict) -> None:
        if not self.ctx.is_main:
            return
        with open(self.paths["metrics.jsonl"], "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        """Train for ``train.epochs`` (or until ``train.max_iters``), evaluate, plot; return eval metrics."""
        self.setup()
        cfg = self.cfg
        metrics: Optional[dict] = None  # {} on ranks other than 0
        epoch, stopped_early = self.start_epoch, False
        for epoch in range(self.start_epoch, cfg.train.epochs):
            stopped_early = self._train_epoch(epoch)
            last_epoch = epoch + 1 == cfg.train.epochs
            evaluate_now = not stopped_early and (
                last_epoch or bool(cfg.train.eval_every and (epoch + 1) % cfg.train.eval_every == 0))
            if stopped_early or evaluate_now:
                # Before the save, so that last.pt holds the statistics the evaluation used and a
                # run resumed from it continues exactly as the uninterrupted one.
                self._refresh_bn_stats()
            if stopped_early or last_epoch or (epoch + 1) % cfg.train.checkpoint_every == 0:
                self._save("last.pt", epoch if stopped_early else epoch + 1)
            if stopped_early:
                break
            if evaluate_now:
                metrics = self._evaluate(epoch + 1)
        if stopped_early or metrics is None:  # stopped by train.max_iters, or resuming a run that had already finished
            if not stopped_early:
                self._refresh_bn_stats()
            metrics = self._evaluate(min(epoch + 1, cfg.train.epochs), final=True)
        self._finish(metrics)
        return metrics

    def _train_epoch(self, epoch: int) -> bool:
        """One epoch; returns True when ``train.max_iters`` stopped it early."""
        cfg = self.cfg
        self.model.train()
        loader = self.train_loader
        loader.set_epoch(epoch)
        # Resuming mid-epoch: the epoch's batch order is a function of (seed, epoch), so skipping the
        # batches already trained on (without loading them) continues exactly where the run stopped.
        loader.batch_sampler.set_skip(max(0, self.iteration - epoch * self.iters_per_epoch))
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                   disable=self.quiet or not self.ctx.is_main or not sys.stderr.isatty())
        tic, seen = time.perf_counter(), 0
        for images, targets in bar:
            if cfg.train.max_iters is not None and self.iteration >= cfg.train.max_iters:
                return True
            losses = self._step(images, targets)
            self.iteration += 1
            if self.online_anchors is not None and self.iteration >= min(cfg.train.warmup_iters, self.total_iters):
                self._freeze_online_anchors()
            seen += len(images) * self.ctx.world_size
            rate = seen / max(time.perf_counter() - tic, 1e-9)
            lr = self.optimizer.param_groups[0]["lr"]
            bar.set_postfix(loss=f"{losses['loss']:.3f}", lr=f"{lr:.4g}", img_s=f"{rate:.2f}")
            if self.iteration % cfg.train.log_every == 0 or self.iteration == 1:
                self._write_metrics({"type": "train", "epoch": epoch + 1, "iteration": self.iteration, "lr": lr,
                                     "time": time.time(), "img_per_s": rate, **losses})
        if cfg.train.max_iters is not None and self.iteration >= cfg.train.max_iters and \
                self.iteration < (epoch + 1) * self.iters_per_epoch:
            return True
        self._write_metrics({"type": "epoch", "epoch": epoch + 1, "iteration": self.iteration, "time": time.time(),
                             "seconds": time.perf_counter() - tic, "img_per_s": seen / max(time.perf_counter() - tic, 1e-9)})
        self.log(f"epoch {epoch + 1}/{cfg.train.epochs}: iteration {self.iteration}, "
                 f"{seen / max(time.perf_counter() - tic, 1e-9):.2f} img/s")
        return False

    def _step(self, images: list, targets: list) -> dict:
        images = [img.to(self.device, non_blocking=True) for img in images]
        targets = [{k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        if self.online_anchors is not None:  # learned anchors still refined online (LR warm-up)
            self.cfg.model.anchors.shapes = self.online_anchors.step(targets, [img.shape[-2:] for img in images])
        with torch.autocast(self.device.type, enabled=self._amp):
            loss_dict = self.model(images, targets)
        loss = sum(loss_dict.values())
        # The logged values are the mean over processes, so every rank takes the same NaN decision.
        names = sorted(loss_dict)
        reduced = dist.mean_over_processes(torch.stack([loss_dict[k].detach().float() for k in names]))
        values = {k: float(v) for k, v in zip(names, reduced)}
        values["loss"] = sum(values.values())
        if not math.isfinite(values["loss"]):
            where = self.last_good_checkpoint or "none written yet"
            raise TrainingError(f"loss is {values['loss']} at iteration {self.iteration + 1} "
                                f"({', '.join(f'{k}={v:.4g}' for k, v in values.items())}); training stopped. "
                                f"Last good checkpoint: {where}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self._bare_model)
        return values

    # ------------------------------------------------------------------ evaluation
    def _refresh_bn_stats(self) -> None:
        """Precise BatchNorm statistics over ``eval.precise_bn_batches`` training batches (every process)."""
        tic = time.perf_counter()
        used = refresh_detector_bn_stats(self._eval_model, self.cfg, self.train_set, self.device,
                                         num_batches=self.cfg.eval.precise_bn_batches,
                                         distributed=self.ctx.distributed, amp=self._amp)
        if used:
            self.log(f"BatchNorm statistics re-estimated over {used} training batches "
                     f"({time.perf_counter() - tic:.0f} s)")

    def _evaluate(self, epoch: int, final: bool = False) -> dict:
        # Rank 0 evaluates the whole validation split with the bare model (no collectives), so the
        # numbers are those of a single process; the other ranks wait for it.
        if not self.ctx.is_main:
            dist.barrier()
            return {}
        metrics, results = run_evaluation(self._eval_model, self.val_set, self.cfg, self.device,
                                          progress=not self.quiet)
        dist.barrier()
        record = {"type": "eval", "epoch": epoch, "iteration": self.iteration, "time": time.time(),
                  **{k: v for k, v in metrics["coco"].items()}, "voc_mAP50": metrics["voc"]["mAP50_area"],
                  "per_class_AP": {name: v["AP"] for name, v in metrics["per_class"].items()}}
        if "val_loss" in metrics:
            record["val_loss"] = metrics["val_loss"]["loss"]
        self._write_metrics(record)
        value = metrics["coco"].get(self.cfg.eval.best_metric)
        if value is not None and (self.best_value is None or value > self.best_value):
            self.best_value = value
            self._save("best.pt", epoch)
        self.log(f"eval at epoch {epoch}: mAP {metrics['coco']['mAP']:.4f}  AP50 {metrics['coco']['AP50']:.4f}  "
                 f"AP75 {metrics['coco']['AP75']:.4f}")
        self._last_results = results
        return metrics

    def _finish(self, metrics: dict) -> None:
        if not self.ctx.is_main:
            return
        from detkit.engine.evaluator import format_coco_table, format_per_class_table, write_json
        from detkit.vis import write_training_plots

        write_json(metrics, self.paths["eval.json"])
        write_json(getattr(self, "_last_results", []), self.paths["detections.json"])
        if not os.path.exists(self.paths["best.pt"]) and os.path.exists(self.paths["last.pt"]):
            self._save("best.pt", self.cfg.train.epochs)
        if self.cfg.output.plots:
            write_training_plots(self.out, self.paths["metrics.jsonl"], metrics, self.classes)
        self.log("COCO metrics on the validation split:\n" + format_coco_table(metrics))
        self.log("per class:\n" + format_per_class_table(metrics))
        self.log(f"outputs in {self.out}")
