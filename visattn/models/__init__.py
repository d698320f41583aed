"""Registered networks (one family per file), the factory, weights I/O and complexity counts.

``visattn.create_model(name, ...)`` / ``visattn.list_models(pattern)``; every model is also reachable
through ``timm.create_model`` after ``import visattn``.
"""

from ._registry import create_model, is_model, list_models, register_model
from .complexity import count_macs, count_parameters
from .weights import load_weights, read_state_dict, save_weights

__all__ = [
    "count_macs",
    "count_parameters",
    "create_model",
    "is_model",
    "list_models",
    "load_weights",
    "read_state_dict",
    "register_model",
    "save_weights",
]
