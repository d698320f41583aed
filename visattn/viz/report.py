"""Training reports: PNG curves from a run's ``log.csv``, per-class bar chart, confusion matrix.

``write_training_report(run_dir)`` (and ``visattn report RUN_DIR``) writes next to the logs:

* ``report_curves.png`` — training loss (and any validation loss: ``*loss*``, ``nll``), learning rate (log
  scale) and the validation metrics per epoch; the recipe's ``eval.metric`` is drawn bold, its best epoch
  starred and named in the panel title; ``ema_*`` metrics dashed; values outside [0, 1] get their own panel; per-class columns
  (``IoU.<class>``) are left out.
* ``report_per_class.png`` — per-class values when a metrics dict has them: ``AP`` (multi-label),
  ``per_class_IoU`` (segmentation), ``per_class_accuracy`` (classification), ``label_ma`` (attributes).
  NaN (a class without positives) is marked "n/a".
* ``report_confusion.png`` — the confusion matrix (rows: truth), row-normalised, from the metrics'
  ``confusion_matrix`` or from ``predictions`` + ``targets`` (single-label).

The per-class and confusion figures need a metrics dict: pass the one a task's metric ``compute()`` returned
(the ``visattn train`` hook passes the test split's, else the last epoch's), or ``evaluate=True`` to evaluate
the run's ``best.safetensors`` on its test (else selection) split first. Matplotlib's object API only (no pyplot, no backend switch).

Titles (run name, model name, best metric) are wrapped to the width their panel or figure has after layout
(``_text.fit_titles``): matplotlib does not wrap text, and a long run name used to be cut off at the
figure edge.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from visattn.inference import RunDir, evaluate, load_trained_model

from ._text import fit_titles

__all__ = [
    "PER_CLASS_KEYS",
    "evaluate_run",
    "plot_confusion_matrix",
    "plot_curves",
    "plot_per_class",
    "read_log",
    "write_training_report",
]

#: Metric keys holding one value per class, in order of preference, with their axis label.
PER_CLASS_KEYS = (
    ("AP", "AP"),
    ("per_class_IoU", "IoU"),
    ("per_class_accuracy", "accuracy (recall)"),
    ("label_ma", "mA (mean of pos./neg. recall)"),
)
_NOT_METRICS = {"epoch", "lr", "epoch_seconds", "num_samples", "pixels", "train_loss"}


def read_log(path: str | Path) -> dict[str, np.ndarray]:
    """Numeric columns of a ``log.csv`` (missing or non-numeric cells are NaN; text columns dropped)."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no training log {str(path)!r}")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: the log has no rows")
    columns: dict[str, np.ndarray] = {}
    for key in rows[0]:
        values = []
        for row in rows:
            try:
                values.append(float(row.get(key) or "nan"))
            except ValueError:
                values.append(math.nan)
        array = np.asarray(values, dtype=np.float64)
        if not np.isnan(array).all():
            columns[key] = array
    return columns


def _is_loss(key: str) -> bool:
    return "loss" in key.lower() or key.lower() in ("nll", "ema_nll")


def plot_curves(
    log: Mapping[str, np.ndarray],
    main_metric: str | None = None,
    mode: str = "max",
    path: str | Path | None = None,
    title: str = "",
    dpi: int = 100,
) -> Figure:
    """Loss, learning rate and validation metrics per epoch (see the module docstring)."""
    epochs = log.get("epoch", np.arange(1, len(next(iter(log.values()))) + 1, dtype=np.float64))
    losses = [k for k in log if _is_loss(k)]
    metrics = [k for k in log if k not in _NOT_METRICS and not _is_loss(k) and "." not in k]
    fractions = [k for k in metrics if np.nanmin(log[k]) >= 0 and np.nanmax(log[k]) <= 1]
    others = [k for k in metrics if k not in fractions]
    panels = ["loss", "lr", "metrics"] + (["other"] if others else [])
    fig = Figure(figsize=(4.0 * len(panels), 3.4), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]

    def draw(ax, keys):
        for k in keys:
            y = log[k]
            ok = ~np.isnan(y)
            style = {"ls": "--"} if k.startswith("ema_") else {}
            if k == main_metric:
                style.update(lw=2.4, color="black")
            ax.plot(epochs[ok], y[ok], marker="o", markersize=3, label=k, **style)
        best = ""
        if main_metric in keys:
            y = log[main_metric]
            if not np.isnan(y).all():
                i = int(np.nanargmax(y) if mode == "max" else np.nanargmin(y))
                ax.plot([epochs[i]], [y[i]], marker="*", color="gold", markersize=14, mec="black", zorder=5)
                best = f" (best {main_metric} {y[i]:.4g}, epoch {epochs[i]:.0f})"
        if keys:
            ax.legend(fontsize=6, ncol=2 if len(keys) > 6 else 1)
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        return best

    titles = []  # set at the end, wrapped to the width each panel gets (see ``_text.fit_titles``)
    draw(axes[0], losses)
    titles.append((axes[0], "loss", 9))
    if "lr" in log:
        axes[1].plot(epochs, log["lr"], marker="o", markersize=3, color="tab:green")
        if np.nanmin(log["lr"]) > 0:
            axes[1].set_yscale("log")
    titles.append((axes[1], "learning rate (end of epoch)", 9))
    axes[1].set_xlabel("epoch", fontsize=8)
    axes[1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].grid(alpha=0.3)
    axes[1].tick_params(labelsize=7)
    best = draw(axes[2], fractions)
    titles.append((axes[2], f"validation metrics{best}", 9))
    if fractions:
        axes[2].set_ylim(-0.02, 1.02)
    if others:
        best = draw(axes[3], others)
        titles.append((axes[3], f"other validation values{best}", 9))
    fit_titles(fig, titles, suptitle=title, suptitle_size=10)
    if path is not None:
        fig.savefig(Path(path), dpi=dpi, format="png")
    return fig


def _as_array(value: Any) -> np.ndarray:
    if torch.is_tensor(value):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def plot_per_class(
    values: Any,
    class_names: Sequence[str] | None = None,
    label: str = "AP",
    path: str | Path | None = None,
    title: str = "",
    dpi: int = 100,
) -> Figure:
    """Bar chart of one value per class (NaN marked "n/a"), with the mean over defined classes."""
    v = _as_array(values).reshape(-1)
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(v.size)]
    if len(names) != v.size:
        raise ValueError(f"{v.size} per-class values but {len(names)} class names")
    fig = Figure(figsize=(max(5.0, 0.22 * v.size + 1.5), 3.6), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(v.size)
    ok = ~np.isnan(v)
    ax.bar(x[ok], v[ok], color="tab:blue", width=0.8)
    for i in x[~ok]:
        ax.text(i, 0.02, "n/a", rotation=90, ha="center", va="bottom", fontsize=7, color="gray")
    if ok.any():
        mean = float(v[ok].mean())
        ax.axhline(mean, color="tab:red", ls="--", lw=1)
        ax.text(v.size - 0.5, mean, f" mean {mean:.4f}", color="tab:red", fontsize=7, va="bottom", ha="right")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=90 if v.size > 12 else 0, fontsize=7)
    ax.set_xlim(-0.6, v.size - 0.4)
    ax.set_ylim(0, 1.05 if not ok.any() or v[ok].max() <= 1 else float(v[ok].max()) * 1.05)
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    fit_titles(fig, [(ax, title or f"per-class {label}", 9)])
    if path is not None:
        fig.savefig(Path(path), dpi=dpi, format="png")
    return fig


def plot_confusion_matrix(
    matrix: Any = None,
    class_names: Sequence[str] | None = None,
    predictions: Any = None,
    targets: Any = None,
    normalize: bool = True,
    path: str | Path | None = None,
    title: str = "",
    dpi: int = 100,
) -> Figure:
    """Confusion matrix ``matrix[true, predicted]`` (or counted from ``predictions`` and ``targets``).

    ``normalize``: colours are row fractions (recall per true class); cells show counts when there are
    at most 20 classes.
    """
    if matrix is None:
        if predictions is None or targets is None:
            raise ValueError("plot_confusion_matrix needs a matrix or predictions and targets")
        p = _as_array(predictions).astype(np.int64).reshape(-1)
        t = _as_array(targets).astype(np.int64).reshape(-1)
        n = max(int(p.max(initial=0)), int(t.max(initial=0))) + 1
        if class_names is not None:
            n = max(n, len(class_names))
        matrix = np.bincount(t * n + p, minlength=n * n).reshape(n, n)
    cm = _as_array(matrix)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"a confusion matrix must be square, got shape {cm.shape}")
    n = cm.shape[0]
    names = [str(c) for c in class_names] if class_names is not None else [str(i) for i in range(n)]
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    side = min(12.0, max(4.0, 0.45 * n + 2))
    fig = Figure(figsize=(side + 1.0, side), dpi=dpi, layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    color = "white" if shown[i, j] > 0.5 * (shown.max() or 1) else "black"
                    ax.text(j, i, f"{cm[i, j]:.0f}", ha="center", va="center", fontsize=7, color=color)
    ticks = np.arange(n)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(names, rotation=90 if n > 10 else 0, fontsize=7)
    ax.set_yticklabels(names, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    accuracy = float(np.trace(cm) / max(cm.sum(), 1))
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("fraction of the true class" if normalize else "count", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    # The square matrix sits at the top right of its layout box, next to its colour bar (set after the
    # colour bar, which resets the anchor): its title then stands where constrained layout reserved room
    # for it, whereas centred vertically, a tall wrapped title would be pushed past the top edge.
    ax.set_anchor("NE")
    fit_titles(fig, [(ax, title or f"confusion matrix (accuracy {accuracy:.4f}, {cm.sum():.0f} samples)", 9)])
    if path is not None:
        fig.savefig(Path(path), dpi=dpi, format="png")
    return fig


def evaluate_run(
    run_dir: str | Path, checkpoint: str | Path | None = None, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Metrics dict (with per-class values) of a run's best checkpoint on its test split (the selection split
    when the recipe has no test split)."""
    run = RunDir(Path(run_dir))
    loaded = load_trained_model(
        run.checkpoint(checkpoint or "best"), config=run.config_file, overrides=overrides
    )
    return evaluate(loaded, "test" if loaded.config["data"]["test_split"] else "val")


def write_training_report(
    run_dir: str | Path,
    metrics: Mapping[str, Any] | None = None,
    predictions: Any = None,
    targets: Any = None,
    class_names: Sequence[str] | None = None,
    evaluate: bool = False,
    metrics_source: str = "",
    dpi: int = 100,
) -> list[Path]:
    """Write the report PNGs of a run directory and return their paths.

    Args:
        run_dir: the run's output folder (``log.csv``, ``config.json``, ``class_names.json``).
        metrics: a metric ``compute()`` dict (per-class values, confusion matrix); optional.
        predictions, targets: single-label predicted and true class indices, for the confusion matrix.
        class_names: default: the run's ``class_names.json`` or the metrics' ``class_names``.
        evaluate: without ``metrics``, evaluate ``best.safetensors`` on the validation split first.
        metrics_source: shown in the per-class title (e.g. ``"last epoch"``, ``"best checkpoint"``).
    """
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    config = run.recipe() or {}
    written: list[Path] = []
    eval_cfg = config.get("eval", {})
    name = (config.get("model") or {}).get("name", "")
    title = f"run {run_dir.name}: {name}" if name else f"run {run_dir.name}"
    if run.log.is_file():
        path = run_dir / "report_curves.png"
        plot_curves(
            read_log(run.log),
            eval_cfg.get("metric"),
            eval_cfg.get("mode", "max"),
            path=path,
            title=title,
            dpi=dpi,
        )
        written.append(path)
    if metrics is None and evaluate:
        metrics = evaluate_run(run_dir)
        metrics_source = metrics_source or "best checkpoint"
    metrics = dict(metrics or {})
    if class_names is None:
        class_names = run.class_names()
        if class_names is None and metrics.get("class_names") is not None:
            class_names = list(metrics["class_names"])
    source = f", {metrics_source}" if metrics_source else ""
    for key, label in PER_CLASS_KEYS:
        if metrics.get(key) is None:
            continue
        values = _as_array(metrics[key]).reshape(-1)
        names = class_names if class_names is not None and len(class_names) == values.size else None
        path = run_dir / "report_per_class.png"
        plot_per_class(values, names, label, path=path, title=f"{title}: per-class {label}{source}", dpi=dpi)
        written.append(path)
        break
    matrix = metrics.get("confusion_matrix")
    if matrix is not None or (predictions is not None and targets is not None):
        n = _as_array(matrix).shape[0] if matrix is not None else None
        names = class_names if class_names is not None and (n is None or len(class_names) == n) else None
        path = run_dir / "report_confusion.png"
        plot_confusion_matrix(matrix, names, predictions, targets, path=path, dpi=dpi)
        written.append(path)
    if not written:
        raise FileNotFoundError(f"{run_dir}: nothing to report (no log.csv and no metrics)")
    return written
