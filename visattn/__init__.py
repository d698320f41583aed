"""visattn: visual attention for image recognition.

Layers: :mod:`visattn.layers`; operators: :mod:`visattn.ops`; attention maps: :func:`record_attention`.
"""

from . import layers, ops
from .recording import AttentionMapSource, record_attention

__version__ = "0.1.0"
__all__ = ["AttentionMapSource", "layers", "ops", "record_attention", "__version__"]
