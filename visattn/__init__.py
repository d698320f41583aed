"""visattn: visual attention for image recognition.

Layers: :mod:`visattn.layers`; operators: :mod:`visattn.ops`; attention maps: :func:`record_attention`.
"""

from . import layers, models, ops
from .models import create_model, list_models
from .recording import AttentionMapSource, record_attention

__version__ = "0.1.0"
__all__ = [
    "AttentionMapSource",
    "create_model",
    "layers",
    "list_models",
    "models",
    "ops",
    "record_attention",
    "__version__",
]
