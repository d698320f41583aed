"""visattn: visual attention for image recognition.

Layers: :mod:`visattn.layers`; operators: :mod:`visattn.ops`; attention maps: :func:`record_attention`;
trained runs: ``visattn.load_run(run_dir)`` (:mod:`visattn.inference`).
"""

from . import layers, models, ops
from .models import create_model, list_models
from .recording import AttentionMapSource, record_attention

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``visattn.load_run`` without importing the inference stack (engine, data) at ``import visattn``.
    if name == "load_run":
        from .inference import load_run

        return load_run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AttentionMapSource",
    "create_model",
    "layers",
    "list_models",
    "load_run",
    "models",
    "ops",
    "record_attention",
    "__version__",
]
