"""Optimisers and schedulers from timm, with per-group learning rates.

CSRA trains its heads at 10× the backbone learning rate (parameters whose name contains ``classifier``);
``head_lr_mult`` and ``head_keywords`` express that for any model. Weight decay applies to every
parameter (CSRA and SAN official recipes) unless ``filter_bias_and_bn=True`` (timm's default behaviour).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch import nn

__all__ = ["param_groups", "build_optimizer", "build_scheduler"]


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    head_lr_mult: float = 1.0,
    head_keywords: Sequence[str] = ("classifier", "head", "fc"),
    filter_bias_and_bn: bool = False,
) -> list[dict[str, Any]]:
    """Split trainable parameters into backbone / head groups (and no-decay groups if filtering)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = head_lr_mult != 1.0 and any(k in name.split(".") or k in name for k in head_keywords)
        no_decay = filter_bias_and_bn and (param.ndim <= 1 or name.endswith(".bias"))
        groups.setdefault((is_head, no_decay), []).append(param)
    if head_lr_mult != 1.0 and not any(is_head for is_head, _ in groups):
        raise ValueError(
            f"head_lr_mult={head_lr_mult} but no parameter name contains any of {list(head_keywords)}; "
            "set optim.head_keywords to the classifier's name"
        )
    out = []
    for (is_head, no_decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr * (head_lr_mult if is_head else 1.0),
                "weight_decay": 0.0 if no_decay else weight_decay,
                "name": ("head" if is_head else "backbone") + ("_no_decay" if no_decay else ""),
            }
        )
    return out


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    groups = param_groups(
        model,
        cfg["lr"],
        cfg["weight_decay"],
        cfg.get("head_lr_mult", 1.0),
        cfg.get("head_keywords", ("classifier", "head", "fc")),
        cfg.get("filter_bias_and_bn", False),
    )
    kwargs = {"momentum": cfg["momentum"]} if cfg["name"].lower() in ("sgd", "momentum", "nesterov") else {}
    return create_optimizer_v2(
        groups, opt=cfg["name"], lr=cfg["lr"], weight_decay=cfg["weight_decay"], **kwargs
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    cfg: Mapping[str, Any],
    epochs: int,
    updates_per_epoch: int,
    mode: str = "max",
):
    """timm scheduler: ``step`` / ``multistep`` / ``cosine`` / ``plateau`` …, with linear warm-up.

    ``step_on_epochs=False`` updates the learning rate every iteration (CSRA's per-iteration warm-up).
    """
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg["name"],
        num_epochs=epochs,
        decay_epochs=cfg["decay_epochs"],
        decay_milestones=list(cfg["decay_milestones"]),
        decay_rate=cfg["decay_rate"],
        min_lr=cfg["min_lr"],
        warmup_lr=cfg["warmup_lr"],
        warmup_epochs=cfg["warmup_epochs"],
        step_on_epochs=cfg["step_on_epochs"],
        updates_per_epoch=updates_per_epoch,
        patience_epochs=cfg.get("patience_epochs", 10),
        plateau_mode=mode,
    )
    if cfg["name"] == "plateau":  # relative improvement needed to reset the patience (0: any improvement)
        scheduler.lr_scheduler.threshold = cfg.get("plateau_threshold", 1e-4)
    return scheduler
