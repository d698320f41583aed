"""Multi-label and attribute recognition (``task: multilabel`` / ``task: attribute``).

``MultiLabelTask`` serves multi-label and attribute recognition: batches are
``(image, target, eval_mask, index)``, scores are sigmoid probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .base import TaskSpec, check_metric_name, register_task

__all__ = ["BranchOutputs", "MultiLabelTask", "build_multilabel_task"]


class BranchOutputs(nn.Module):
    """Training view of a multi-branch model whose ``forward`` returns ``forward_branches(x)``.

    Wrapping this view (not the model) in DDP keeps gradient synchronisation, which only happens for
    calls through the DDP wrapper, while the model's own ``forward`` stays the plain timm one.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        return self.model.forward_branches(x)


class MultiLabelTask:
    """Multi-label / attribute training and evaluation.

    Args:
        loss: a visattn loss. Plain losses are called ``loss(logits, targets, mask=mask)``; losses with
            ``needs_branches = True`` (VAA) get the model's branch dict (``forward_branches``, through
            :class:`BranchOutputs`) and the sample indices and epoch:
            ``loss(branches, targets, mask=mask, indices=index, epoch=epoch)``, then ``after_step``.
        metric_factory: builds a fresh accumulating metric (``update(scores, targets, mask, indices=)``,
            ``compute() -> dict``).
        mask_ignored: exclude ignored labels (``eval_mask`` False: VOC difficult, WIDER unspecified, RAP
            uncertain) from the loss. Default False: they are trained as negatives, as CSRA and the VAA
            author do (``datasets.md`` §1, ``train_ignore``).
    """

    def __init__(
        self, loss: nn.Module, metric_factory: Callable[[], Any], mask_ignored: bool = False
    ) -> None:
        self.loss = loss
        self._metric_factory = metric_factory
        self.mask_ignored = mask_ignored
        self.needs_branches = bool(getattr(loss, "needs_branches", False))

    def metric_factory(self, dataset: Dataset | None = None) -> Any:
        """A fresh accumulating metric (the same for every evaluated dataset)."""
        return self._metric_factory()

    def train_module(self, model: nn.Module) -> nn.Module:
        """The module the trainer calls (and wraps in DDP) for training steps."""
        if self.needs_branches:
            if not hasattr(model, "forward_branches"):
                raise ValueError(
                    f"loss {type(self.loss).__name__} needs a multi-branch model (forward_branches)"
                )
            return BranchOutputs(model)
        return model

    def training_loss(self, model: nn.Module, batch, epoch: int) -> torch.Tensor:
        images, targets, eval_mask, index = batch
        mask = eval_mask if self.mask_ignored else None
        if self.needs_branches:
            branches = model(images)
            loss = self.loss(branches, targets, mask=mask, indices=index, epoch=epoch)
            after = getattr(self.loss, "after_step", None)
            if after is not None:
                after(branches, targets, indices=index, epoch=epoch)
            return loss
        return self.loss(model(images), targets, mask=mask)

    @torch.no_grad()
    def evaluate_batch(self, model: nn.Module, batch, metric: Any) -> None:
        images, targets, mask, index = batch
        metric.update(torch.sigmoid(model(images).float()), targets, mask, indices=index)

    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss.state_dict()} if isinstance(self.loss, nn.Module) else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "loss" in state and isinstance(self.loss, nn.Module):
            self.loss.load_state_dict(state["loss"])


def _build_loss(config: Mapping[str, Any], model: nn.Module, train_set: Dataset | None) -> nn.Module:
    from visattn.losses import create_loss, positive_prior

    name = config["loss"]["name"]
    kwargs = dict(config["loss"]["kwargs"])
    targets = getattr(train_set, "targets", None)
    masks = getattr(train_set, "masks", None)
    key = name.lower().replace("-", "_")
    if key in ("focal", "weighted_focal", "vaa") and kwargs.get("prior") is None and targets is not None:
        kwargs["prior"] = positive_prior(targets, masks)  # attribute frequencies of the training split
    if key in ("vaa", "history_weighted") and train_set is not None:
        # Items carry dataset indices: a held-out training part keeps the whole split's index space.
        kwargs.setdefault("num_samples", getattr(train_set, "num_indices", len(train_set)))
    if key == "history_weighted" and targets is not None:
        kwargs.setdefault("num_classes", int(targets.shape[1]))
    if key == "vaa":
        kwargs.setdefault("num_attention", len(getattr(model, "taps", ())) or None)
    return create_loss(name, **kwargs)


def build_multilabel_task(
    config: Mapping[str, Any], model: nn.Module, train_set: Dataset | None
) -> MultiLabelTask:
    from visattn.metrics import AttributeMetrics, MultiLabelMetrics

    e = config["eval"]
    if config["task"] == "multilabel":
        options = {"thr": e["threshold"]}
        if e["preset"]:
            options["preset"] = e["preset"]

        def metric_factory():
            return MultiLabelMetrics(**options)

    else:

        def metric_factory():
            return AttributeMetrics(thr=e["threshold"])

    # The metric's scalar names, read off a synthetic batch (they depend on the preset, not on the data).
    probe = metric_factory()
    probe.update(
        torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.7, 0.4]]), torch.tensor([[1.0, 0, 1], [0, 1, 1]]), None
    )
    check_metric_name(config, [k for k, v in probe.compute().items() if isinstance(v, (int, float))])
    if train_set is None:  # evaluation only: the loss is never called, and priors need the training split
        from visattn.losses import create_loss

        loss = create_loss("bce")
    else:
        loss = _build_loss(config, model, train_set)
    return MultiLabelTask(loss, metric_factory, mask_ignored=config["loss"]["mask_ignored"])


register_task("multilabel", TaskSpec(build_multilabel_task))
register_task("attribute", TaskSpec(build_multilabel_task))
