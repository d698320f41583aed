"""The training loop: one for every task, driven by a recipe (``visattn/config.py``).

Features: timm optimisers/schedulers with per-group learning rates and warm-up; AMP (bfloat16 on CPU,
float16 + GradScaler on GPU); optional EMA (timm ``ModelEmaV3``); gradient clipping; a checkpoint
every epoch (safetensors weights + a weights-only training state; the newest ``train.keep_checkpoints``
kept) and exact resume; best model by a chosen validation metric (``ema_*`` metrics select by the EMA
weights); CSV log, optional TensorBoard, tqdm progress bars, a ``logging`` line every ``train.log_interval``
steps and per epoch; seeds fixed per epoch so that a resumed run repeats the data order of an
uninterrupted one; torchrun DDP (gloo on CPU, NCCL on GPU) with distributed samplers and metrics gathered
across processes. End-of-fit work (e.g. the report PNGs of ``visattn train``) is passed in as callbacks:
the engine imports nothing above it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from visattn.utils.distributed import DistInfo, barrier, init_distributed, seed_everything
from visattn.utils.tables import write_csv

from .checkpoint import (
    BEST_FILE,
    CHECKPOINT_DIR,
    CLASS_NAMES_FILE,
    CONFIG_FILE,
    LOG_FILE,
    TEST_METRICS_FILE,
    latest_checkpoint,
    load_checkpoint,
    load_model_weights,
    load_strict,
    model_state_for_saving,
    prune_checkpoints,
    remove_stale_temporaries,
    save_best,
    save_checkpoint,
    split_ema,
    unwrap_model,
    write_atomic,
)
from .optim import build_optimizer, build_scheduler
from .tasks.base import class_names_of, describe_split

__all__ = ["Trainer", "TrainingDivergedError"]

_LOG = logging.getLogger(__name__)
# What a run folder holds besides config.json / class_names.json: a fresh run refuses to write over it.
_RUN_FILES = (LOG_FILE, CHECKPOINT_DIR, BEST_FILE, TEST_METRICS_FILE, "tensorboard")


class TrainingDivergedError(RuntimeError):
    """Training produced a non-finite loss, gradient, parameter or buffer; the message says where and which
    checkpoints were kept (the last finite one and ``best``). Nothing non-finite is ever saved."""


class Trainer:
    """Train and evaluate ``model`` on ``train_set``/``val_set`` with ``task``, as ``config`` says.

    Use :func:`visattn.engine.build.build_trainer` to get all four from a recipe. ``callbacks`` are called
    as ``callback(trainer)`` by the main process after :meth:`fit`; one that raises is logged and skipped
    (a report problem never loses a trained model).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        model: nn.Module,
        task: Any,
        train_set: Dataset | None,
        val_set: Dataset | None,
        dist: DistInfo | None = None,
        callbacks: Sequence[Callable[[Trainer], Any]] = (),
        test_set: Dataset | None = None,
    ) -> None:
        self.config = config
        self.dist = dist or init_distributed()
        self.out = Path(config["output"])
        self.task = task
        tcfg = config["train"]
        seed_everything(tcfg["seed"], self.dist.rank)
        model = model.to(self.dist.device)
        if tcfg["sync_bn"] and self.dist.device.type != "cuda":
            raise ValueError("train.sync_bn needs CUDA devices (torch's SyncBatchNorm does not run on CPU)")
        if tcfg["sync_bn"] and self.dist.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if tcfg["channels_last"]:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.ddp_model: nn.Module = task.train_module(model)
        if self.dist.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.ddp_model,
                device_ids=[self.dist.device.index] if self.dist.device.type == "cuda" else None,
            )
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.epochs = int(tcfg["epochs"])
        self.train_loader = self._loader(train_set, train=True) if train_set is not None else None
        steps = len(self.train_loader) if self.train_loader is not None else 1
        if tcfg["max_steps_per_epoch"]:
            steps = min(steps, int(tcfg["max_steps_per_epoch"]))
        self.steps_per_epoch = steps
        self.optimizer = build_optimizer(model, config["optim"])
        self.scheduler = build_scheduler(
            self.optimizer, config["sched"], self.epochs, steps, config["eval"]["mode"]
        )
        amp_dtype = getattr(torch, tcfg["amp_dtype"])
        self.autocast = (
            (lambda: torch.autocast(self.dist.device.type, dtype=amp_dtype)) if tcfg["amp"] else nullcontext
        )
        use_scaler = tcfg["amp"] and amp_dtype == torch.float16 and self.dist.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.ema = None
        if tcfg["ema"]:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(model, decay=tcfg["ema_decay"])
        self.start_epoch = 0
        self.best: dict[str, Any] = {"value": None, "epoch": None}
        self.history: list[dict[str, Any]] = []
        self.callbacks = list(callbacks)
        self.last_metrics: dict[str, Any] | None = None
        self.test_metrics: dict[str, Any] | None = None

    # ------------------------------------------------------------------ data
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        dcfg = self.config["data"]
        batch = dcfg["batch_size"] if train else (dcfg["eval_batch_size"] or dcfg["batch_size"])
        # The same sampler in one process and in N: one process with batch N·b sees exactly the global
        # batches of N processes with batch b (DistributedSampler's permutation of (seed, epoch)).
        sampler = DistributedSampler(
            dataset,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=train and dcfg["shuffle"],
            seed=self.config["train"]["seed"],
            drop_last=False,
        )
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            num_workers=dcfg["workers"],
            drop_last=False,
            persistent_workers=False,
            pin_memory=self.dist.device.type == "cuda",
        )

    def _set_epoch(self, epoch: int) -> None:
        # Data order and augmentation randomness depend only on (seed, epoch, rank): a resumed run
        # repeats an uninterrupted one exactly.
        self.train_loader.sampler.set_epoch(epoch)
        seed_everything(self.config["train"]["seed"] * 7919 + epoch, self.dist.rank)

    def _to_device(self, batch):
        images, *rest = batch
        images = images.to(self.dist.device, non_blocking=True)
        if self.config["train"]["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        return (images, *[r.to(self.dist.device) if torch.is_tensor(r) else r for r in rest])

    # ------------------------------------------------------------------ loop
    def fit(
        self, resume: str | Path | None = None, until_epoch: int | None = None, overwrite: bool = False
    ) -> dict[str, Any]:
        """Train for the configured epochs (from a checkpoint if ``resume``: a path or ``"auto"``).

        ``until_epoch`` stops after that epoch (1-based) with the schedule of the full run, e.g. to split
        training across job time limits; ``resume="auto"`` continues it. A fresh run (no ``resume``) refuses
        an output folder that already holds a run unless ``overwrite`` (which deletes that run first).
        """
        if self.train_loader is None:
            raise ValueError("fit() needs a training set")
        if self.dist.is_main:
            self._prepare_output(fresh=not resume, overwrite=overwrite)
        barrier()
        if resume:
            self.resume(resume)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / CONFIG_FILE).write_text(json.dumps(self.config, indent=2, default=str))
            names = class_names_of(self.train_set)
            if names is not None:
                (self.out / CLASS_NAMES_FILE).write_text(json.dumps(names))
        logger = _Logger(self.out) if self.dist.is_main else None
        if self.dist.is_main:
            _LOG.info(self._summary(resume))
            _LOG.info(
                "data: train %s (%d samples); selection (eval.metric %s) %s (%s); test %s",
                describe_split(self.config, "train"), len(self.train_set), self.config["eval"]["metric"],
                describe_split(self.config, "val"), len(self.val_set) if self.val_set is not None else 0,
                describe_split(self.config, "test")
                + (f" ({len(self.test_set)}), evaluated once with the best weights" if self.test_set else ""),
            )  # fmt: skip
        last: dict[str, Any] = {}
        stop = self.epochs if until_epoch is None else min(self.epochs, int(until_epoch))
        for epoch in range(self.start_epoch, stop):
            t0 = time.perf_counter()
            train_loss = self.train_one_epoch(epoch)
            self._check_finite_state(epoch)  # before evaluation scores (and saving keeps) a broken model
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": self._lr()}
            ecfg = self.config["eval"]
            if self.val_set is not None and ((epoch + 1) % ecfg["every"] == 0 or epoch + 1 == self.epochs):
                metrics = self.evaluate()
                self.last_metrics = metrics
                row.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
                if self.ema is not None:
                    ema_metrics = self.evaluate(self.ema.module)
                    row.update({f"ema_{k}": v for k, v in ema_metrics.items() if isinstance(v, (int, float))})
                self._update_best(row, epoch)
            row["epoch_seconds"] = time.perf_counter() - t0
            self.scheduler.step(epoch + 1, row.get(self.config["eval"]["metric"]))
            self.history.append(row)
            if self.dist.is_main:
                self._save(epoch)
                logger.log(self.history)  # the whole log from the checkpointed history: resume-safe
                _LOG.info(_format_row(row))
            last = row
        if logger is not None:
            logger.close()
        result = {**last, "best": dict(self.best)}
        if self.test_set is not None and stop == self.epochs:
            result["test"] = self.evaluate_test()
        if self.dist.is_main:
            for callback in self.callbacks:
                try:
                    callback(self)
                except Exception as err:  # never lose a trained model to an end-of-fit extra
                    _LOG.warning("end-of-fit callback %s skipped: %s: %s", callback, type(err).__name__, err)
        return result

    def evaluate_test(self) -> dict[str, Any]:
        """The test split, once, with the best weights (``best.safetensors``; its EMA weights when it has
        them); the final weights when no epoch was selected. Written to ``test_metrics.json``."""
        barrier()  # the main process wrote best.safetensors
        best = self.out / BEST_FILE
        model, weights = self.model, "the final weights (no best epoch was selected)"
        if self.best.get("epoch") is not None and best.is_file():
            model = copy.deepcopy(unwrap_model(self.model))
            used = load_model_weights(model, best)
            weights = (
                f"{BEST_FILE} ({'EMA' if used == 'ema' else 'model'} weights of epoch {self.best['epoch']}, "
                f"{self.best.get('metric')} {self.best.get('value'):.6g} on the selection split)"
            )
        metrics = self.evaluate(model, self.test_set)
        self.test_metrics = metrics
        record = {
            "split": describe_split(self.config, "test"),
            "weights": weights,
            **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        }
        if self.dist.is_main:
            write_atomic(self.out / TEST_METRICS_FILE, lambda p: p.write_text(json.dumps(record, indent=2)))
            _LOG.info("test %s with %s: %s", record["split"], weights, _format_row(metrics))
        return record

    def train_one_epoch(self, epoch: int) -> float:
        self.ddp_model.train()
        self._set_epoch(epoch)
        clip = self.config["optim"]["clip_grad"]
        interval = int(self.config["train"]["log_interval"] or 0)
        total, count = 0.0, 0
        t_start = time.perf_counter()
        bar = _progress(
            self.train_loader, self.steps_per_epoch, f"epoch {epoch + 1}/{self.epochs}", self.dist
        )
        for step, batch in enumerate(bar):
            if step >= self.steps_per_epoch:
                break
            batch = self._to_device(batch)
            with self.autocast():
                loss = self.task.training_loss(self.ddp_model, batch, epoch)
            if not torch.isfinite(loss):
                self._diverged(epoch, step, f"the loss is {loss.item()}")
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
            else:
                loss.backward()
            if clip:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            elif self.scaler is None:
                grads = [p.grad for p in self.model.parameters() if p.grad is not None]
                norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            # With a GradScaler, overflowing fp16 gradients are expected: the scaler skips those steps.
            if self.scaler is None and not torch.isfinite(norm):
                self._diverged(epoch, step, f"the gradient norm is {float(norm)} (loss {loss.item():.4g})")
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.model, step=epoch * self.steps_per_epoch + step)
            self.scheduler.step_update(epoch * self.steps_per_epoch + step + 1)
            total += float(loss.detach()) * batch[0].shape[0]
            count += batch[0].shape[0]
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{total / count:.4f}", lr=f"{self._lr():.3g}")
            if interval and (step + 1) % interval == 0 and self.dist.is_main:
                elapsed = max(time.perf_counter() - t_start, 1e-9)
                remaining = (self.epochs - epoch - 1) * self.steps_per_epoch + self.steps_per_epoch - step - 1
                _LOG.info(
                    "epoch %d step %d/%d  loss %.4g  lr %.3g  %.1f samples/s  ETA %s (training steps)",
                    epoch + 1, step + 1, self.steps_per_epoch, total / count, self._lr(), count / elapsed,
                    _duration(remaining * elapsed / (step + 1)),
                )  # fmt: skip
        if self.dist.distributed:  # report the loss of the global batch, not of rank 0's shard
            sums = torch.tensor([total, float(count)], dtype=torch.float64, device=self.dist.device)
            torch.distributed.all_reduce(sums)
            total, count = float(sums[0]), int(sums[1])
        return total / max(count, 1)

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None, dataset: Dataset | None = None) -> dict[str, Any]:
        """Metrics of ``model`` (default: the trained model) on ``dataset`` (default: the validation set)."""
        model = model if model is not None else self.model
        dataset = dataset if dataset is not None else self.val_set
        loader = self._loader(dataset, train=False)
        metric = self.task.metric_factory(dataset)
        was_training = model.training
        model.eval()
        for batch in _progress(loader, len(loader), "eval", self.dist):
            with self.autocast():
                self.task.evaluate_batch(model, self._to_device(batch), metric)
        model.train(was_training)
        return metric.compute()

    # ------------------------------------------------------------------ state
    def _prepare_output(self, fresh: bool, overwrite: bool) -> None:
        """Refuse (or, with ``overwrite``, clear) a run folder a fresh run would mix with; drop the temporary
        files an interrupted atomic write left behind."""
        existing = [name for name in _RUN_FILES if (self.out / name).exists()]
        if fresh and existing:
            if not overwrite:
                raise ValueError(
                    f"output folder {str(self.out)!r} already holds a run ({', '.join(existing)}): pass "
                    "--resume to continue it, --overwrite to replace it, or set another output"
                )
            for name in existing:
                path = self.out / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            for report in self.out.glob("report_*.png"):
                report.unlink()
            _LOG.info("overwrite: removed the previous run's %s from %s", ", ".join(existing), self.out)
        for folder in (self.out, self.out / CHECKPOINT_DIR):
            for path in remove_stale_temporaries(folder) if folder.is_dir() else ():
                _LOG.info("removed %s, left by an interrupted write", path)

    def _summary(self, resume: str | Path | None) -> str:
        """The start-of-run line: what is trained, from which weights, for how long, where to."""
        m, d = self.config["model"], self.config["data"]
        params = sum(p.numel() for p in self.model.parameters())
        names = class_names_of(self.train_set)
        classes = f"{len(names)} classes" if names is not None else "classes: n/a"
        if resume and self.start_epoch:
            weights = f"resumed at epoch {self.start_epoch + 1}"
        else:
            sources = [f"pretrained_file {m['pretrained_file']}"] if m["pretrained_file"] else []
            sources += [f"checkpoint_path {m['checkpoint_path']}"] if m["checkpoint_path"] else []
            weights = "weights from " + " and ".join(sources) if sources else "initial weights"
        return (
            f"run: {m['name']} ({params:,} parameters, {weights}), task {self.config['task']}, {classes}; "
            f"input {d['img_size']} px, normalisation mean {d['mean']} std {d['std']}; {self.epochs} epochs x "
            f"{self.steps_per_epoch} steps of batch {d['batch_size']} on {self.dist.device} "
            f"({torch.get_num_threads()} threads, {self.dist.world_size} process(es)); output {self.out}"
        )

    def _kept_checkpoints(self) -> str:
        last = latest_checkpoint(self.out / CHECKPOINT_DIR)
        best = self.out / BEST_FILE
        kept = f"the last finite checkpoint {last}" if last else "no checkpoint (no epoch finished)"
        return kept + (f" and {best} (epoch {self.best.get('epoch')})" if best.is_file() else "")

    def _diverged(self, epoch: int, step: int, what: str) -> None:
        raise TrainingDivergedError(
            f"training diverged at epoch {epoch + 1}, step {step + 1}: {what}. Kept {self._kept_checkpoints()}; "
            "resume from it with a lower optim.lr or with optim.clip_grad"
        )

    def _check_finite_state(self, epoch: int) -> None:
        """Parameters and buffers (BatchNorm running statistics included) must be finite to be kept."""
        modules = [("model", unwrap_model(self.model))] + ([("EMA", self.ema.module)] if self.ema else [])
        for label, module in modules:
            for key, value in module.state_dict().items():
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    raise TrainingDivergedError(
                        f"training diverged in epoch {epoch + 1}: {label} tensor {key!r} holds NaN or infinity "
                        f"after the epoch (nothing of this epoch was saved). Kept {self._kept_checkpoints()}; "
                        "resume from it with a lower optim.lr or with optim.clip_grad"
                    )

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _update_best(self, row: dict[str, Any], epoch: int) -> None:
        key, mode = self.config["eval"]["metric"], self.config["eval"]["mode"]
        if key not in row:
            raise KeyError(f"eval.metric {key!r} is not among the computed metrics {sorted(row)}")
        value = row[key]
        better = self.best["value"] is None or (
            value > self.best["value"] if mode == "max" else value < self.best["value"]
        )
        if better and not math.isnan(value):
            self.best = {"value": value, "epoch": epoch + 1, "metric": key}
            if self.dist.is_main:
                # Model and EMA weights of that epoch; loaders use the EMA ones by default.
                save_best(
                    self.out / BEST_FILE,
                    model_state_for_saving(self.model, self.ema),
                    {"epoch": str(epoch + 1), "metric": key, "value": repr(value)},
                )

    def _save(self, epoch: int) -> None:
        state = {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            # timm's PlateauLRScheduler saves only `best`: keep torch's patience/cooldown counters too
            "plateau": getattr(getattr(self.scheduler, "lr_scheduler", None), "state_dict", dict)(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "task": self.task.state_dict(),
            "best": {k: v for k, v in self.best.items() if v is not None},
            "history": json.dumps(self.history),
            "torch_rng": torch.get_rng_state(),
        }
        directory = self.out / CHECKPOINT_DIR
        save_checkpoint(directory, epoch + 1, model_state_for_saving(self.model, self.ema), state)
        prune_checkpoints(directory, self.config["train"]["keep_checkpoints"])

    def resume(self, source: str | Path) -> None:
        """Restore model, EMA, optimizer, scheduler, loss state and counters from a checkpoint."""
        path = latest_checkpoint(self.out / CHECKPOINT_DIR) if str(source) == "auto" else Path(source)
        if path is None:
            return  # "auto" with nothing to resume: start fresh
        weights, state = load_checkpoint(path)
        model_sd, ema_sd = split_ema(weights)
        load_strict(self.model, model_sd, path)
        if self.ema is not None and ema_sd:
            load_strict(self.ema.module, ema_sd, path, "EMA weights")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("plateau") and hasattr(self.scheduler, "lr_scheduler"):
            self.scheduler.lr_scheduler.load_state_dict(state["plateau"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.task.load_state_dict(state.get("task", {}))
        self.best = {"value": None, "epoch": None, **state.get("best", {})}
        self.history = json.loads(state.get("history", "[]"))
        self.start_epoch = int(state["epoch"]) + 1
        if torch.is_tensor(state.get("torch_rng")):
            torch.set_rng_state(state["torch_rng"])


class _Logger:
    """CSV log (``log.csv``) plus TensorBoard scalars when tensorboard is installed."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOG_FILE
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            pass

    def log(self, history: list[dict[str, Any]]) -> None:
        """Write ``log.csv`` from the run's history (one row per finished epoch) atomically; TensorBoard gets
        the newest row. The history is part of every checkpoint, so a resumed run's log is exactly the rows
        up to its checkpoint, whatever a kill interrupted."""
        write_atomic(self.path, lambda path: write_csv(path, history))
        row = history[-1]
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, row["epoch"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_row(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']}"] if "epoch" in row else []
    for key in ("train_loss", "lr", "mAP", "mA", "CF1", "OF1", "top1", "mIoU", "epoch_seconds"):
        if key in row:
            value = row[key]
            parts.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return "  ".join(parts)


def _progress(iterable, total: int, desc: str, dist: DistInfo):
    # Bars only on an interactive terminal of the main process; logs and CI get the per-epoch lines.
    if not dist.is_main or not sys.stderr.isatty():
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=1.0)
