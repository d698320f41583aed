"""Registered networks (one family per file), the factory, weights I/O, complexity counts, converters.

``visattn.create_model(name, ...)`` / ``visattn.list_models(pattern)``; every model is also reachable
through ``timm.create_model`` after ``import visattn``. Importing a family module registers its
entrypoints and converters.
"""

from . import csra, glyphnet, pose, psa, resattnet, san, segmentation, vaa
from ._registry import create_model, input_config, is_model, list_models, model_in_chans, register_model
from .complexity import count_macs, count_parameters, default_flop_convention, model_info
from .convert import convert_checkpoint, convert_file, list_converters
from .insert import insert_attention
from .training_free import ResidualAttentionClassifier, residual_attention
from .weights import load_weights, read_state_dict, save_weights

__all__ = [
    "convert_checkpoint",
    "convert_file",
    "count_macs",
    "count_parameters",
    "create_model",
    "csra",
    "default_flop_convention",
    "glyphnet",
    "input_config",
    "insert_attention",
    "is_model",
    "list_converters",
    "list_models",
    "load_weights",
    "model_in_chans",
    "model_info",
    "pose",
    "psa",
    "read_state_dict",
    "ResidualAttentionClassifier",
    "register_model",
    "resattnet",
    "residual_attention",
    "san",
    "save_weights",
    "segmentation",
    "vaa",
]
