"""Inference on trained runs: the one run loader, and prediction on image files.

:func:`load_trained_model` (recipe or run directory + checkpoint → model, eval transform, class names;
EMA-aware) serves ``visattn eval``, ``predict``, ``visualize`` and ``export`` and the Python API;
:func:`predict` turns image files into per-task results::

    from visattn.inference import load_trained_model, predict

    loaded = load_trained_model("runs/demo/csra/best.safetensors")  # finds the run's config.json
    results = predict(loaded, ["photo.jpg"], topk=3)
"""

from .api import LoadedRun, load_run
from .predict import predict, write_predictions
from .run import (
    MULTILABEL_TASKS,
    RunDir,
    TrainedModel,
    evaluate,
    example_input,
    load_trained_model,
    read_run_config,
)

__all__ = [
    "LoadedRun",
    "load_run",
    "MULTILABEL_TASKS",
    "RunDir",
    "TrainedModel",
    "evaluate",
    "example_input",
    "load_trained_model",
    "predict",
    "read_run_config",
    "write_predictions",
]
