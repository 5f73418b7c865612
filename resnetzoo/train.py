"""Fine-tune a ResNet on image-folder data: the ``Trainer`` and the ``python -m resnetzoo.train`` CLI.

    splits = resnetzoo.data.load_splits("PokemonData")
    model = resnetzoo.create("resnet50", pretrained=True, num_classes=len(splits["train"].classes))
    trainer = Trainer(splits, model, device="cuda", epochs=50, batch_size=16, lr=1e-3, num_workers=4, out_dir="run")
    history = trainer.train()

A run folder is a ``save_pretrained`` folder (``resnetzoo.create("run")`` rebuilds the best model)
plus ``checkpoint.pt`` (the full training state, for ``resume=True``), ``history.json``/``.csv``,
``curves.png`` and ``splits.json`` (the data split it was trained on).

The same code runs in one process or under ``torchrun --nproc_per_node=N`` (DistributedDataParallel):
data is sharded, metrics are summed over processes, and only rank 0 writes files or draws progress.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from ._io import atomic_write
from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .data import collate_skipping_broken
from .errors import ResnetzooError

__all__ = ["Trainer", "TrainConfig", "TrainError", "main"]

logger = logging.getLogger(__name__)

HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
CURVES_PNG = "curves.png"
SPLITS_JSON = "splits.json"


class TrainError(ResnetzooError, ValueError):
    """Training options, data or run folders that do not fit together."""


@dataclass
class TrainConfig:
    """The training recipe. Stored in the run's ``config.json`` (``extra["training"]``) and checkpoint."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    num_workers: int = 4
    optimizer: str = "adamw"  # "adamw" or "sgd" (with Nesterov momentum)
    weight_decay: float = 0.05  # not applied to biases and BatchNorm parameters
    momentum: float = 0.9  # SGD only
    scheduler: str = "cosine"  # "cosine" (to min_lr_ratio * lr) or "constant"; both after the warmup
    warmup_epochs: float = 1.0  # linear warmup, capped at a quarter of all steps
    min_lr_ratio: float = 0.0
    label_smoothing: float = 0.1
    amp: str = "auto"  # "auto" (bf16 on CUDA when supported, else fp16; off on CPU), "bf16", "fp16", "off"
    channels_last: bool | None = None  # None: on for CUDA (faster convolutions), off on CPU
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = None
    ema_decay: float | None = None  # e.g. 0.999: evaluate and save an exponential moving average of the weights
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    freeze_epochs: int = 0  # train only the head for this many epochs (linear probe), then everything
    early_stopping_patience: int | None = None  # stop after this many epochs without a better val acc@1 (train loss without val)
    seed: int = 0
    eval_batch_size: int | None = None  # default: 2 x batch_size
    progress: bool = True

    def validate(self) -> None:
        def fail(message: str) -> None:
            raise TrainError(message)

        for name in ("epochs", "batch_size", "grad_accum_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                fail(f"{name} must be a positive integer, got {value!r}.")
        if self.num_workers < 0:
            fail(f"num_workers must be >= 0, got {self.num_workers}.")
        if not self.lr > 0:
            fail(f"lr must be > 0, got {self.lr}.")
        if self.optimizer not in ("adamw", "sgd"):
            fail(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}.")
        if self.scheduler not in ("cosine", "constant"):
            fail(f"scheduler must be 'cosine' or 'constant', got {self.scheduler!r}.")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            fail(f"amp must be 'auto', 'bf16', 'fp16' or 'off', got {self.amp!r}.")
        if not 0 <= self.label_smoothing < 1:
            fail(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            fail(f"ema_decay must be in (0, 1), e.g. 0.999; got {self.ema_decay}.")
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            fail("mixup_alpha and cutmix_alpha must be >= 0 (0 switches them off).")
        if self.freeze_epochs < 0 or self.warmup_epochs < 0:
            fail("freeze_epochs and warmup_epochs must be >= 0.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            fail(f"early_stopping_patience must be >= 1 or None, got {self.early_stopping_patience}.")


# Options that may differ when a run is resumed: they change speed or display, not the result.
_RESUME_FREE = {"num_workers", "progress", "eval_batch_size"}


def _native_bf16(device: torch.device) -> bool:
    """Whether the CUDA ``device`` computes bf16 in hardware (compute capability 8.0+).

    Plain ``torch.cuda.is_bf16_supported()`` also counts emulation, and asks about the current device rather
    than this one: on a V100 or T4 emulated bf16 is much slower than fp16 with a GradScaler.
    """
    with torch.cuda.device(device):
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # an older torch without including_emulation
            return torch.cuda.get_device_capability(device) >= (8, 0)


class _ShardedEpochSampler(torch.utils.data.DistributedSampler):
    """``DistributedSampler`` (shuffled per ``(seed, epoch)``, padded and sharded), yielding ``(index, epoch)``.

    The epoch travels with each index so that the dataset can seed each sample's augmentation from
    (seed, epoch, index) alone: results then do not depend on the number of workers or on where a resumed
    run restarted. The sampler runs in the main process, so this also works with persistent workers.
    """

    def __init__(self, size: int, rank: int, world_size: int, seed: int, with_epoch: bool = True) -> None:
        # The dataset only needs a length here; the sampler never reads it. No process group is required.
        super().__init__(range(size), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
        self.with_epoch = with_epoch  # False for datasets that take plain indices (e.g. torchvision's ImageFolder)

    def __iter__(self) -> Iterator[tuple[int, int] | int]:
        for index in super().__iter__():
            yield (index, self.epoch) if self.with_epoch else index


class Trainer:
    """Fine-tunes a classifier on ``datasets["train"]``, selecting the best epoch by ``datasets["val"]`` acc@1
    (by the lowest training loss when there is no val split).

    Args:
        datasets: ``{"train": ..., "val": ..., "test": ...}`` as from ``resnetzoo.data.load_splits``;
            "val" and "test" are optional. Datasets return ``(image, label)`` (or ``None`` for a broken file).
        model: a ``resnetzoo`` ResNet (from ``resnetzoo.create``) with as many outputs as classes.
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        out_dir: the run folder; ``None`` keeps everything in memory (no checkpoints).
        resume: continue the run in ``out_dir`` from its ``checkpoint.pt``; the options must match.
        overwrite: allow starting a new run in a folder that already holds one.
        **options: the rest of :class:`TrainConfig` (optimizer, weight_decay, amp, ema_decay, ...).
    """

    def __init__(self, datasets: Mapping[str, Any], model: nn.Module, device: str | torch.device = "auto",
                 epochs: int = 10, batch_size: int = 32, lr: float = 1e-3, num_workers: int = 4,
                 out_dir: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
                 **options: Any) -> None:
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"Trainer got unknown options {unknown}; known options: {sorted(known - {'epochs'})}.")
        self.recipe = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, num_workers=num_workers, **options)
        self.recipe.validate()
        if "train" not in datasets or len(datasets["train"]) == 0:
            raise TrainError("datasets needs a non-empty 'train' split, e.g. resnetzoo.data.load_splits(folder).")
        self.datasets = dict(datasets)
        self.context = distributed.init_distributed(device)
        self.device = self.context.device
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.classes = list(getattr(self.datasets["train"], "classes", None) or [])
        num_outputs = getattr(model, "num_classes", None)
        if self.classes and num_outputs is not None and num_outputs != len(self.classes):
            raise TrainError(
                f"The model has {num_outputs} outputs but the data has {len(self.classes)} classes. Create it with "
                f"resnetzoo.create(..., num_classes={len(self.classes)})."
            )
        self.num_classes = len(self.classes) or int(num_outputs)

        recipe = self.recipe
        self.amp_dtype = self._amp_dtype()
        self.channels_last = recipe.channels_last if recipe.channels_last is not None else self.device.type == "cuda"
        # Seed per rank: augmentation draws are per sample (see _ShardedEpochSampler); this seeds mixup/cutmix.
        torch.manual_seed(recipe.seed + self.context.rank)

        self.model = model.to(self.device, memory_format=torch.channels_last if self.channels_last else torch.preserve_format)
        self._ddp: nn.Module | None = None
        self._wrapped_frozen: bool | None = None
        self.train_loader = self._train_loader()
        steps_per_epoch = len(self.train_loader)
        self.updates_per_epoch = math.ceil(steps_per_epoch / recipe.grad_accum_steps)
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.ema = None
        if recipe.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
        self.mix = self._mix_transform()

        self.epoch = 0  # completed epochs
        self.global_step = 0  # optimizer updates
        self._placeholder: tuple[torch.Tensor, torch.Tensor] | None = None  # see _placeholder_batch
        self.history: list[dict[str, Any]] = []
        # score: what selects the best epoch (val acc@1, or minus the train loss without a val split)
        self.best: dict[str, Any] = {"acc1": None, "epoch": None, "metrics": None, "score": None, "selected_by": None}
        self.epochs_without_improvement = 0
        self.test_metrics: dict[str, float] | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self._eval_loaders: dict[int, torch.utils.data.DataLoader] = {}

        if self.out_dir is not None:
            checkpoint_path = self.out_dir / CHECKPOINT_NAME
            if resume:
                self._resume(checkpoint_path)
            elif checkpoint_path.exists() and not overwrite:
                raise TrainError(
                    f"{self.out_dir} already holds a training run. Pass resume=True (--resume) to continue it, "
                    "overwrite=True (--overwrite) to start again there, or choose another folder."
                )
        elif resume:
            raise TrainError("resume=True needs out_dir= the run folder to resume.")

    # -- setup ---------------------------------------------------------------------------------------

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.recipe.amp
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        if amp == "bf16" or (amp == "auto" and _native_bf16(self.device)):
            return torch.bfloat16
        if self.device.type != "cuda":
            raise TrainError("amp='fp16' needs a CUDA device; use amp='bf16' or 'off' on the CPU.")
        return torch.float16

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _loader_options(self) -> dict[str, Any]:
        workers = self.recipe.num_workers
        return {
            "num_workers": workers,
            "collate_fn": collate_skipping_broken,
            "pin_memory": self.device.type == "cuda",  # page-locked host memory makes non_blocking copies async
            "persistent_workers": workers > 0,  # no worker start-up cost at every epoch
            "prefetch_factor": 4 if workers > 0 else None,
            # The loader draws its workers' base seed from this generator, never from the global RNG.
            "generator": torch.Generator().manual_seed(self.recipe.seed),
        }

    def _train_loader(self) -> torch.utils.data.DataLoader:
        dataset = self.datasets["train"]
        sampler = _ShardedEpochSampler(len(dataset), self.context.rank, self.context.world_size, self.recipe.seed,
                                       with_epoch=getattr(dataset, "accepts_epoch_keys", False))
        # Drop an incomplete last batch when there are full ones: a batch of one breaks BatchNorm at small sizes.
        drop_last = len(sampler) > self.recipe.batch_size
        return torch.utils.data.DataLoader(dataset, batch_size=self.recipe.batch_size, sampler=sampler,
                                           drop_last=drop_last, **self._loader_options())

    def _eval_loader(self, dataset: Any) -> torch.utils.data.DataLoader:
        # The loaders of the trainer's own splits are kept (with persistent workers) and reused every epoch, so
        # validation does not start worker processes each time; other datasets get a one-off loader.
        own = any(dataset is d for d in self.datasets.values())
        if own and id(dataset) in self._eval_loaders:
            return self._eval_loaders[id(dataset)]
        # Every world_size-th image from this rank, in order, without padding: metrics count each image once.
        sampler = range(self.context.rank, len(dataset), self.context.world_size)
        options = self._loader_options()
        options["persistent_workers"] = own and options["persistent_workers"]
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.recipe.eval_batch_size or 2 * self.recipe.batch_size,
                                             sampler=sampler, **options)
        if own:
            self._eval_loaders[id(dataset)] = loader
        return loader

    def _optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for parameter in self.model.parameters():
            # Weight decay on BatchNorm scales and biases only hurts (they are not weights that overfit).
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
        groups = [{"params": decay, "weight_decay": self.recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        if self.recipe.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=self.recipe.lr, momentum=self.recipe.momentum,
                                   nesterov=self.recipe.momentum > 0)
        return torch.optim.AdamW(groups, lr=self.recipe.lr)

    def _scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        from torch.optim import lr_scheduler

        total = self.recipe.epochs * self.updates_per_epoch
        warmup = min(round(self.recipe.warmup_epochs * self.updates_per_epoch), total // 4)
        if self.recipe.scheduler == "cosine":
            main = lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, total - warmup),
                                                  eta_min=self.recipe.lr * self.recipe.min_lr_ratio)
        else:
            main = lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)
        if warmup == 0:
            return main
        ramp = lr_scheduler.LinearLR(self.optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
        return lr_scheduler.SequentialLR(self.optimizer, [ramp, main], milestones=[warmup])

    def _mix_transform(self) -> Any:
        from torchvision.transforms import v2

        choices = []
        if self.recipe.mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=self.recipe.mixup_alpha, num_classes=self.num_classes))
        if self.recipe.cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=self.recipe.cutmix_alpha, num_classes=self.num_classes))
        if not choices:
            return None
        return choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    def _set_frozen(self, frozen: bool) -> None:
        """Freeze (linear probe) or unfreeze everything but the classifier head ``fc``."""
        for name, parameter in self.model.named_parameters():
            if not name.startswith("fc."):
                parameter.requires_grad_(not frozen)
        if self.context.enabled and self._wrapped_frozen != frozen:
            # DDP registers the parameters that need gradients when it wraps the model: re-wrap when that set changes.
            device_ids = [self.device] if self.device.type == "cuda" else None
            self._ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
            self._wrapped_frozen = frozen

    def _train_mode(self, frozen: bool) -> None:
        self.model.train()
        if frozen:
            # A linear probe keeps the backbone as it is, BatchNorm statistics included.
            for name, child in self.model.named_children():
                if name != "fc":
                    child.eval()

    # -- training ------------------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.context.is_main

    def train(self) -> list[dict[str, Any]]:
        """Train the remaining epochs; returns the history (one dict of metrics per epoch)."""
        recipe = self.recipe
        if self.out_dir is not None and self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._copy_manifest()
        stopped_early = False
        for epoch in range(self.epoch, recipe.epochs):
            frozen = epoch < recipe.freeze_epochs
            self._set_frozen(frozen)
            train_metrics = self._train_one_epoch(epoch, frozen)
            if self.context.enabled:
                # DDP keeps parameters in step but lets each rank update its own BatchNorm statistics (and EMA)
                # from its shard: make every rank hold rank 0's model, the one that is evaluated and saved.
                distributed.broadcast_tensors(list(self.model.buffers()))
                if self.ema is not None:
                    distributed.broadcast_tensors([*self.ema.parameters(), *self.ema.buffers()])
            val_metrics = self.evaluate("val") if self._has("val") else None
            row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_metrics.items()}}
            if val_metrics is not None:
                row.update({f"val_{k}": v for k, v in val_metrics.items() if k != "num_samples"})
            self.history.append(row)
            self.epoch = epoch + 1

            # Without a val split the best epoch is the one of lowest training loss; "acc1" then stays None
            # so that nothing reports a loss as an accuracy.
            score = val_metrics["acc1"] if val_metrics is not None else -train_metrics["loss"]
            if self.best["score"] is None or score > self.best["score"]:
                self.best = {"acc1": val_metrics["acc1"] if val_metrics is not None else None, "epoch": epoch + 1,
                             "metrics": val_metrics, "score": score,
                             "selected_by": "val acc@1" if val_metrics is not None else "train loss"}
                self.epochs_without_improvement = 0
                self._keep_best()
            else:
                self.epochs_without_improvement += 1
            patience = recipe.early_stopping_patience
            stopped_early = patience is not None and self.epochs_without_improvement >= patience and self.epoch < recipe.epochs

            self._log_epoch(row)
            if self.out_dir is not None:
                self._save_state(stopped_early)
            if stopped_early:
                logger.info("Early stopping: no better %s for %d epochs (best: epoch %d).",
                            self.best["selected_by"], patience, self.best["epoch"])
                break
        self._finish()
        distributed.barrier()
        return self.history

    def _has(self, split: str) -> bool:
        return split in self.datasets and self.datasets[split] is not None and len(self.datasets[split]) > 0

    def _train_one_epoch(self, epoch: int, frozen: bool) -> dict[str, float]:
        recipe = self.recipe
        model = self._ddp or self.model
        self._train_mode(frozen)
        self.train_loader.sampler.set_epoch(epoch)
        accumulate = recipe.grad_accum_steps
        steps = len(self.train_loader)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = skipped = 0
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch", leave=False,
                   disable=not (recipe.progress and self.is_main), dynamic_ncols=True)
        start = last_refresh = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        previous = None
        pending = False  # gradients accumulated since the last update
        for step, (images, labels, num_broken) in enumerate(self.train_loader):
            skipped += num_broken
            empty = labels.numel() == 0  # every image of the batch failed to load
            update = (step + 1) % accumulate == 0 or step + 1 == steps
            if empty and self._ddp is None:
                # Nothing to learn from, but the schedule must still advance: the number of optimizer and
                # scheduler steps never depends on which files broke.
                if update:
                    self._update(apply=pending)
                    pending = False
                bar.update(1)
                continue
            if empty:
                # Under DDP every process must run every backward (gradients are all-reduced there): repeat the
                # previous batch with a zero loss weight; before the first one, a batch made from a readable image.
                images, labels = previous if previous is not None else self._placeholder_batch(memory_format)
            else:
                images = images.to(self.device, non_blocking=True).contiguous(memory_format=memory_format)
                labels = labels.to(self.device, non_blocking=True)
                if self._ddp is not None:
                    previous = (images, labels)
            targets = labels
            if self.mix is not None and not empty:
                images, targets = self.mix(images, labels)
            # Between updates, DDP need not all-reduce gradients: they are only summed locally.
            sync = contextlib.nullcontext() if (update or self._ddp is None) else self._ddp.no_sync()
            with sync:
                with self._autocast():
                    logits = model(images)
                    loss = self.criterion(logits, targets)
                self.scaler.scale(loss * 0.0 if empty else loss / accumulate).backward()
            pending = True
            if update:
                self._update(apply=True)
                pending = False
            bar.update(1)
            if empty:
                continue
            # Metrics stay on the device: reading them every step would wait for the GPU each time.
            loss_sum += loss.detach().float() * labels.numel()
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += labels.numel()
            now = time.perf_counter()
            if not bar.disable and now - last_refresh > 1.0:
                last_refresh = now
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                                img_s=f"{seen * self.context.world_size / (now - start):.0f}")
        if not bar.disable and seen:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                            img_s=f"{seen * self.context.world_size / (time.perf_counter() - start):.0f}")
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # CUDA runs asynchronously: the last steps may still be queued
        elapsed = time.perf_counter() - start
        totals = distributed.all_reduce_sum(torch.stack([loss_sum.double(), correct.double(),
                                                         torch.tensor(float(seen), device=self.device, dtype=torch.float64),
                                                         torch.tensor(float(skipped), device=self.device, dtype=torch.float64)]))
        loss_total, correct_total, count, skipped_total = totals.tolist()
        if skipped_total:
            logger.warning("%d images failed to load in epoch %d and were skipped (their paths are logged above).",
                           int(skipped_total), epoch + 1)
        count = max(count, 1.0)
        return {"loss": loss_total / count, "acc1": correct_total / count, "lr": self.optimizer.param_groups[0]["lr"],
                "images_per_s": count / max(elapsed, 1e-9), "time_s": elapsed}

    def _update(self, apply: bool) -> None:
        """One optimizer update (``apply=False``: nothing was accumulated, so only the schedule advances)."""
        if apply:
            if self.recipe.clip_grad_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # Advancing the schedule without an optimizer step is intended here (torch warns when it comes first).
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        self.global_step += 1
        if apply and self.ema is not None:
            self.ema.update_parameters(self.model)

    def _placeholder_batch(self, memory_format: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
        """Two copies of the first readable training image, for a rank whose first batch failed to load.

        A real image, not zeros: its forward pass updates BatchNorm statistics. Two, because BatchNorm refuses
        one value per channel in training mode.
        """
        if self._placeholder is None:
            dataset = self.datasets["train"]
            with torch.random.fork_rng(devices=[]):  # leave the augmentation and mixup draws as they were
                item = next((item for item in map(dataset.__getitem__, range(len(dataset))) if item is not None), None)
            if item is None:
                raise TrainError("No training image can be read (their errors are logged above). "
                                 "Check the dataset folder, then run the training again.")
            image, label = item
            images = torch.stack([image, image]).to(self.device).contiguous(memory_format=memory_format)
            self._placeholder = (images, torch.full((2,), int(label), dtype=torch.long, device=self.device))
        return self._placeholder

    # -- evaluation ----------------------------------------------------------------------------------

    def eval_model(self) -> nn.Module:
        """The model that is evaluated and saved: the EMA weights when ``ema_decay`` is set, else the model."""
        return self.ema.module if self.ema is not None else self.model

    @torch.inference_mode()
    def evaluate(self, split: str | Any = "val", model: nn.Module | None = None) -> dict[str, float]:
        """Loss (plain cross-entropy, no label smoothing), acc@1 and acc@5 on a split name or a dataset.

        Under torchrun each process evaluates its share and the sums are all-reduced, so every rank
        returns the metrics of the whole split (``num_samples`` counts each image once).
        """
        dataset = self.datasets[split] if isinstance(split, str) else split
        model = self.eval_model() if model is None else model
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        top1 = torch.zeros((), device=self.device, dtype=torch.long)
        top5 = torch.zeros((), device=self.device, dtype=torch.long)
        count = torch.zeros((), device=self.device, dtype=torch.long)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        try:
            for images, labels, _ in self._eval_loader(dataset):
                if labels.numel() == 0:
                    continue
                images = images.to(self.device, non_blocking=True).contiguous(memory_format=memory_format)
                labels = labels.to(self.device, non_blocking=True)
                with self._autocast():
                    logits = model(images)
                logits = logits.float()
                loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
                ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
                hits = ranked == labels[:, None]
                top1 += hits[:, 0].sum()
                top5 += hits.any(dim=1).sum()
                count += labels.numel()
        finally:
            model.train(was_training)
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, top1.double(), top5.double(), count.double()]))
        loss_total, top1_total, top5_total, n = totals.tolist()
        if n == 0:
            return {"loss": float("nan"), "acc1": float("nan"), "acc5": float("nan"), "num_samples": 0}
        return {"loss": loss_total / n, "acc1": top1_total / n, "acc5": top5_total / n, "num_samples": int(n)}

    # -- run folder ----------------------------------------------------------------------------------

    def _keep_best(self) -> None:
        source = self.eval_model()
        self._best_state = {k: v.detach().to("cpu", copy=True) for k, v in source.state_dict().items()}
        if self.out_dir is not None and self.is_main:
            self._save_model(source)

    def _run_config(self) -> Any:
        """``model.config`` completed with what the run knows: classes, eval transform, recipe, metrics, data."""
        config = getattr(self.model, "config", None)
        if config is None:
            return None
        config = copy.deepcopy(config)
        if self.classes:
            config.class_names = list(self.classes)
        eval_config = getattr(self.datasets["train"], "eval_transform_config", None)
        if eval_config is not None:
            config.eval_transform = dict(eval_config)
        train = self.datasets["train"]
        config.extra = {
            **config.extra,
            "training": {**dataclasses.asdict(self.recipe), "epochs_run": self.epoch, "world_size": self.context.world_size,
                         "amp_dtype": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
                         "base_weights": config.base_weights, "base_weights_sha256": config.base_weights_sha256},
            "metrics": {"best_epoch": self.best["epoch"], "best_selected_by": self.best["selected_by"],
                        "val": self.best["metrics"], "test": self.test_metrics},
            "data": {"root": str(getattr(train, "root", "")), "num_classes": self.num_classes,
                     "split_sizes": {split: len(d) for split, d in self.datasets.items() if d is not None},
                     "split_manifest": SPLITS_JSON if getattr(train, "manifest_path", None) else None},
        }
        return config

    def _save_model(self, source: nn.Module) -> None:
        from .hub import save_pretrained

        config = self._run_config()
        if config is None:
            logger.warning("The model has no .config (build it with resnetzoo.create); the best weights are not saved.")
            return
        self.model.config = config  # the live model describes itself as the saved one does
        save_pretrained(source, self.out_dir, config=config)

    def _copy_manifest(self) -> None:
        manifest = getattr(self.datasets["train"], "manifest_path", None)
        if manifest is not None and Path(manifest).is_file() and Path(manifest).resolve() != (self.out_dir / SPLITS_JSON).resolve():
            with atomic_write(self.out_dir / SPLITS_JSON) as handle, open(manifest, "rb") as original:
                shutil.copyfileobj(original, handle)

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": distributed.all_gather_object(capture_rng_state(self.device)),  # one per rank: each restores its own
            "history": self.history,
            "best": dict(self.best),
            "epochs_without_improvement": self.epochs_without_improvement,
            "recipe": dataclasses.asdict(self.recipe),
            "config": self.model.config.to_dict() if getattr(self.model, "config", None) is not None else None,
            "classes": self.classes,
        }

    def _save_state(self, stopped_early: bool) -> None:
        state = self._state()  # every rank takes part in gathering RNG states
        if not self.is_main:
            return
        state["stopped_early"] = stopped_early
        save_checkpoint(self.out_dir / CHECKPOINT_NAME, state)
        with atomic_write(self.out_dir / HISTORY_JSON, "w") as handle:
            json.dump(self.history, handle, indent=1)
        columns = list(dict.fromkeys(key for row in self.history for key in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.history)
        with atomic_write(self.out_dir / HISTORY_CSV, "w") as handle:
            handle.write(buffer.getvalue())
        try:
            from .plots import plot_history

            plot_history(self.history, self.out_dir / CURVES_PNG, train_loss_includes=self._train_loss_includes())
        except ResnetzooError as error:  # no matplotlib: the numbers are in history.csv
            logger.warning("Training curves not drawn: %s", error)

    def _train_loss_includes(self) -> list[str]:
        """What the training loss adds to plain cross-entropy, for the title of the loss curves."""
        recipe = self.recipe
        included = [("label smoothing", recipe.label_smoothing > 0), ("mixup", recipe.mixup_alpha > 0),
                    ("cutmix", recipe.cutmix_alpha > 0)]
        return [name for name, on in included if on]

    def _resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location="cpu")
        saved = state.get("recipe", {})
        current = dataclasses.asdict(self.recipe)
        different = {k: (saved.get(k), v) for k, v in current.items() if k not in _RESUME_FREE and saved.get(k) != v}
        if different:
            raise TrainError(
                f"Cannot resume {path}: options differ from the run's ({', '.join(f'{k}: run {a!r}, now {b!r}' for k, (a, b) in different.items())}). "
                "Resume with the same options, or start a new run in another folder."
            )
        if state.get("classes") and self.classes and state["classes"] != self.classes:
            raise TrainError(f"Cannot resume {path}: the data's classes differ from the run's ({len(state['classes'])} classes).")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                self.ema.load_state_dict(state["ema"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"Checkpoint {path} does not fit this model and recipe ({str(error)[:300]}).") from None
        rng_states = state["rng"]
        if len(rng_states) != self.context.world_size:
            logger.warning("Checkpoint was written by %d processes, resuming with %d: random draws will differ.",
                           len(rng_states), self.context.world_size)
        restore_rng_state(rng_states[min(self.context.rank, len(rng_states) - 1)], self.device)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.best = dict(state["best"])
        if "score" not in self.best:  # older checkpoints kept minus the train loss in "acc1" when there was no val split
            self.best["score"] = self.best["acc1"]
            self.best["selected_by"] = "val acc@1" if self.best["metrics"] is not None else "train loss"
            if self.best["metrics"] is None:
                self.best["acc1"] = None
        self.epochs_without_improvement = int(state["epochs_without_improvement"])
        if state.get("config") is not None and getattr(self.model, "config", None) is not None:
            from .config import ModelConfig

            self.model.config = ModelConfig.from_dict(state["config"], source=str(path))
        if state.get("stopped_early"):
            self.epoch = self.recipe.epochs  # the run had finished
        logger.info("Resumed %s at epoch %d (step %d).", path.parent, self.epoch, self.global_step)

    def best_state_dict(self) -> dict[str, torch.Tensor] | None:
        """The weights of the best epoch (by val acc@1, or train loss without a val split), from memory or the run folder."""
        if self._best_state is None and self.out_dir is not None and (self.out_dir / "model.safetensors").is_file():
            from .weights.safe import load_safetensors

            self._best_state = load_safetensors(self.out_dir / "model.safetensors")
        return self._best_state

    def _finish(self) -> None:
        """Evaluate the best model on the test split and write the final metrics into the run folder."""
        best_state = self.best_state_dict()
        if best_state is None:
            return
        best_model = copy.deepcopy(self.eval_model())
        best_model.load_state_dict(best_state)
        if self._has("test"):
            self.test_metrics = self.evaluate("test", model=best_model)
            if self.is_main:
                logger.info("Test (best epoch %s): loss %.4f  acc@1 %.4f  acc@5 %.4f", self.best["epoch"],
                            self.test_metrics["loss"], self.test_metrics["acc1"], self.test_metrics["acc5"])
        if self.out_dir is not None and self.is_main:
            self._save_model(best_model)

    def _log_epoch(self, row: Mapping[str, Any]) -> None:
        if not self.is_main:
            return
        parts = [f"epoch {row['epoch']}/{self.recipe.epochs}", f"train loss {row['train_loss']:.4f} acc@1 {row['train_acc1']:.4f}"]
        if "val_acc1" in row:
            parts.append(f"val loss {row['val_loss']:.4f} acc@1 {row['val_acc1']:.4f} acc@5 {row['val_acc5']:.4f}")
        parts.append(f"lr {row['train_lr']:.2e}  {row['train_images_per_s']:.0f} img/s  {row['train_time_s']:.1f}s")
        logger.info("  ".join(parts))


# -- CLI ---------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m resnetzoo.train",
        description="Fine-tune a ResNet on a folder of images (one sub-folder per class). Writes a run folder that "
                    "resnetzoo.create(RUN_DIR) loads and python -m resnetzoo.predict uses. Works the same under "
                    "torchrun --nproc_per_node=N (one process per GPU). See docs/fine-tuning.md.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", required=True, type=Path, help="image folder with one sub-folder per class (required)")
    data.add_argument("--image-size", type=int, default=None,
                      help="crop size for training and evaluation (default: the weights' own crop, else 224)")
    data.add_argument("--val-fraction", type=float, default=0.15, help="share of each class for validation (default: 0.15)")
    data.add_argument("--test-fraction", type=float, default=0.15,
                      help="share of each class for the final test of the best model (default: 0.15)")
    data.add_argument("--splits", type=Path, default=None,
                      help="split manifest to reuse or create (default: DATA/splits.json); a copy goes to the run folder")
    data.add_argument("--crop-scale", type=float, nargs=2, default=(0.08, 1.0), metavar=("MIN", "MAX"),
                      help="area range of the random resized crop (default: 0.08 1); raise MIN for tiny images")
    data.add_argument("--no-hflip", action="store_true", help="no random horizontal flips (for text, digits, ...)")
    data.add_argument("--num-workers", type=int, default=d.num_workers,
                      help=f"data loading processes per process/GPU; 0 loads in the main process (default: {d.num_workers})")

    model = parser.add_argument_group("model")
    model.add_argument("--model", default="resnet50",
                       help="registered name (see resnetzoo.list_models()) or a saved/run folder (default: resnet50)")
    model.add_argument("--pretrained", nargs="?", const=True, default=False, metavar="TAG",
                       help="start from pretrained weights: torchvision's default (V2 where it exists) without TAG, "
                            "or a tag such as IMAGENET1K_V1, or a .pth/.safetensors path (default: random init)")

    run = parser.add_argument_group("run")
    run.add_argument("--out", required=True, type=Path, help="run folder to write (required)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out from its checkpoint.pt (same recipe options)")
    run.add_argument("--overwrite", action="store_true", help="start a new run in a folder that already holds one")
    run.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars, only one log line per epoch")

    recipe = parser.add_argument_group("recipe")
    recipe.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs to train (default: {d.epochs})")
    recipe.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"images per step per process (default: {d.batch_size})")
    recipe.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default: {d.lr})")
    recipe.add_argument("--optimizer", choices=("adamw", "sgd"), default=d.optimizer,
                        help=f"adamw, or sgd with Nesterov momentum (default: {d.optimizer})")
    recipe.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help=f"weight decay, not applied to biases and BatchNorm (default: {d.weight_decay})")
    recipe.add_argument("--momentum", type=float, default=d.momentum, help=f"SGD momentum (default: {d.momentum})")
    recipe.add_argument("--scheduler", choices=("cosine", "constant"), default=d.scheduler,
                        help=f"learning-rate schedule after the warmup, stepped every update (default: {d.scheduler})")
    recipe.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                        help=f"linear warmup length, at most a quarter of training (default: {d.warmup_epochs})")
    recipe.add_argument("--min-lr-ratio", type=float, default=d.min_lr_ratio,
                        help=f"final learning rate of the cosine, as a share of --lr (default: {d.min_lr_ratio})")
    recipe.add_argument("--label-smoothing", type=float, default=d.label_smoothing,
                        help=f"label smoothing of the training loss (default: {d.label_smoothing})")
    recipe.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=d.amp,
                        help="mixed precision: auto = bf16 on CUDA when supported, else fp16; off on CPU (default: auto)")
    recipe.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="channels-last memory format (default: on for CUDA, off on CPU)")
    recipe.add_argument("--grad-accum-steps", type=int, default=d.grad_accum_steps,
                        help="batches whose gradients are summed before each update (default: 1)")
    recipe.add_argument("--clip-grad-norm", type=float, default=None, help="clip the gradient norm to this value (default: off)")
    recipe.add_argument("--ema-decay", type=float, default=None,
                        help="keep an exponential moving average of the weights (e.g. 0.999); it is evaluated and saved "
                             "(default: off)")
    recipe.add_argument("--mixup-alpha", type=float, default=d.mixup_alpha, help="MixUp alpha; 0.2 is typical (default: 0, off)")
    recipe.add_argument("--cutmix-alpha", type=float, default=d.cutmix_alpha,
                        help="CutMix alpha; 1.0 is typical (default: 0, off)")
    recipe.add_argument("--freeze-epochs", type=int, default=d.freeze_epochs,
                        help="train only the classifier head for this many epochs first (default: 0)")
    recipe.add_argument("--early-stopping-patience", "--patience", dest="patience", type=int, default=None,
                        help="early stopping: stop after this many epochs without a better val acc@1 (default: off)")
    recipe.add_argument("--seed", type=int, default=d.seed,
                        help=f"seed of the split, the new head, shuffling and augmentation (default: {d.seed})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m resnetzoo.train``: parse, load data, build the model, train. Returns an exit status."""
    args = _parser().parse_args(argv)
    from . import data
    from .factory import create

    try:
        context = distributed.init_distributed(args.device)
        logging.basicConfig(level=logging.INFO if context.is_main else logging.WARNING,
                            format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
        if context.is_main:
            _check_out_dir(args.out)  # before scanning data or loading weights, which can take minutes
        torch.manual_seed(args.seed)  # the new head's initialisation
        model, weights = _model_for(args)
        split_options = {"image_size": args.image_size, "val_fraction": args.val_fraction, "test_fraction": args.test_fraction,
                         "seed": args.seed, "weights": weights, "manifest": args.splits,
                         "crop_scale": tuple(args.crop_scale), "hflip": not args.no_hflip}
        # Rank 0 scans and writes the manifest first; the others then read it instead of racing to write it.
        if not context.is_main:
            distributed.barrier()
        splits = data.load_splits(args.data, **split_options)
        if context.is_main:
            distributed.barrier()
        if model is None:
            model = create(args.model, pretrained=args.pretrained, num_classes=len(splits["train"].classes))
        trainer = Trainer(
            splits, model, device=context.device, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            num_workers=args.num_workers, out_dir=args.out, resume=args.resume, overwrite=args.overwrite,
            optimizer=args.optimizer, weight_decay=args.weight_decay, momentum=args.momentum, scheduler=args.scheduler,
            warmup_epochs=args.warmup_epochs, min_lr_ratio=args.min_lr_ratio, label_smoothing=args.label_smoothing,
            amp=args.amp, channels_last=args.channels_last, grad_accum_steps=args.grad_accum_steps,
            clip_grad_norm=args.clip_grad_norm, ema_decay=args.ema_decay, mixup_alpha=args.mixup_alpha,
            cutmix_alpha=args.cutmix_alpha, freeze_epochs=args.freeze_epochs, early_stopping_patience=args.patience,
            seed=args.seed, progress=not args.no_progress,
        )
        trainer.train()
    except ResnetzooError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()
    if context.is_main:
        best = trainer.best
        print(f"Best epoch {best['epoch']}: val acc@1 {best['acc1']:.4f}" if best["metrics"] else "Training done.")
        if trainer.test_metrics:
            print(f"Test acc@1 {trainer.test_metrics['acc1']:.4f}  acc@5 {trainer.test_metrics['acc5']:.4f}")
        print(f"Run folder: {args.out}  (load it with resnetzoo.create({str(args.out)!r}))")
    return 0


def _check_out_dir(out_dir: Path) -> None:
    """Make sure the run folder can be written: create it now rather than fail after the first epoch."""
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainError(f"--out {out_dir} is a file, not a folder. Pass a folder for the run (new or existing).")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TrainError(f"Cannot create the run folder --out {out_dir} ({error.strerror or error}). "
                         "Pass a folder in a writable place.") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise TrainError(f"The run folder --out {out_dir} is not writable. Pass a folder in a writable place.")


def _model_for(args: argparse.Namespace) -> tuple[nn.Module | None, Any]:
    """On --resume, the model as the run's checkpoint describes it; else ``None`` (built once classes are known).

    Also returns what the eval transform should follow: the pretrained weights, a folder's config, or None.
    """
    from .config import ModelConfig, build_model
    from .weights.records import preprocessing_record

    if args.resume:
        state = load_checkpoint(args.out / CHECKPOINT_NAME)
        if state.get("config") is None:
            raise TrainError(f"{args.out / CHECKPOINT_NAME} has no model config; it cannot be resumed from the command line.")
        model = build_model(ModelConfig.from_dict(state["config"], source=str(args.out / CHECKPOINT_NAME)))
        return model, model.config.eval_transform
    if Path(args.model).is_dir():
        from .hub import read_config

        return None, read_config(Path(args.model)).eval_transform
    return None, preprocessing_record(args.model, args.pretrained)


if __name__ == "__main__":
    raise SystemExit(main())
