"""The notebook-sized API: ``visattn.load_run(run_dir)`` → a model that predicts and shows where it looks.

::

    import visattn

    run = visattn.load_run("runs/demo/csra")            # best.safetensors + config.json + class_names.json
    results = run.predict(["photo.png"], topk=3)       # class names and scores (maps / keypoints per task)
    maps = run.attention(["photo.png"])                 # {module name: {kind: tensor}} per image

Everything comes from the one run loader (:func:`~visattn.inference.load_trained_model`): the recipe's own
evaluation pipeline, the run's class names, EMA weights when the run kept them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from visattn.recording import record_attention

from .predict import predict
from .run import RunDir, TrainedModel, load_trained_model

__all__ = ["LoadedRun", "load_run"]


class LoadedRun(TrainedModel):
    """A :class:`~visattn.inference.TrainedModel` with :meth:`predict` and :meth:`attention`."""

    def predict(
        self,
        images: Sequence[str | Path],
        topk: int = 5,
        threshold: float = 0.5,
        out_dir: str | Path | None = None,
    ) -> list[dict[str, Any]]:
        """One result per image file (see :func:`visattn.inference.predict`)."""
        return predict(self, images, topk=topk, threshold=threshold, out_dir=out_dir)

    @torch.no_grad()
    def attention(self, images: Sequence[str | Path]) -> list[dict[str, dict[str, torch.Tensor]]]:
        """The attention maps every visattn layer records (:func:`visattn.record_attention`), per image file:
        ``{module name: {kind: tensor without the batch dimension}}``."""
        out = []
        self.model.eval()
        for path in images:
            with record_attention(self.model) as maps:
                self.model(self.input_of(path).unsqueeze(0))
            out.append({name: {kind: t[0] for kind, t in kinds.items()} for name, kinds in maps.items()})
        return out


def load_run(path: str | Path, checkpoint: str = "best", ema: bool | None = None, **kwargs: Any) -> LoadedRun:
    """A trained run, ready for inference.

    Args:
        path: a run folder (``output:`` of a recipe) or a weights file inside one.
        checkpoint: with a folder, ``"best"`` or ``"last"`` (or a file name inside it).
        ema: see :func:`~visattn.inference.load_trained_model` (default: EMA weights when present).
        **kwargs: passed on to :func:`~visattn.inference.load_trained_model` (``overrides``, ``img_size``...).
    """
    path = Path(path)
    if path.is_dir():
        path = RunDir(path).checkpoint(checkpoint if checkpoint in ("best", "last") else path / checkpoint)
    loaded = load_trained_model(path, ema=ema, **kwargs)
    return LoadedRun(**{f.name: getattr(loaded, f.name) for f in fields(TrainedModel)})
