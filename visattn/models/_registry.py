"""visattn's model registry: every entrypoint is registered in timm's registry too.

``visattn.create_model`` only creates visattn models (and says so for other names); after
``import visattn``, ``timm.create_model`` reaches them as well, so timm-based training scripts work.
"""

from __future__ import annotations

import fnmatch
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
from timm.models import register_model as _timm_register_model
from torch import nn

from visattn.utils.errors import unexpected_keyword, unknown_option_message

__all__ = [
    "create_model",
    "is_model",
    "list_models",
    "model_options",
    "register_model",
    "unknown_option_message",
]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator for model entrypoints ``fn(pretrained=False, **kwargs) -> nn.Module``.

    The module defining ``fn`` should hold timm ``default_cfgs`` (``generate_default_cfgs``) so that
    timm knows the input size, mean/std and classifier name of each model.
    """
    _timm_register_model(fn)
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of visattn models matching a shell-style ``pattern``."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def is_model(name: str) -> bool:
    return name in _MODELS


def create_model(
    name: str,
    pretrained: bool = False,
    num_classes: int | None = None,
    *,
    pretrained_file: str | Path | None = None,
    checkpoint_path: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create a visattn model by name (timm's factory underneath).

    Args:
        name: a name from :func:`list_models`.
        pretrained: load weights from ``pretrained_file`` (visattn never downloads; timm adapts the
            classifier when ``num_classes`` differs from the file's).
        num_classes: classifier size (default: the model's own).
        pretrained_file: local ``.safetensors`` or ``.pth`` file for ``pretrained=True``.
        checkpoint_path: local file loaded strictly after creation (e.g. a visattn checkpoint).
        **kwargs: model options (``features_only=True``, ``relation=...`` etc.).
    """
    if name not in _MODELS:
        close = [m for m in _MODELS if name.split("_")[0] in m][:8]
        raise ValueError(
            f"unknown visattn model {name!r}; similar: {close or list_models()[:8]} (see visattn.list_models())"
        )
    if pretrained and pretrained_file is None:
        raise ValueError(
            f"pretrained=True needs pretrained_file=<local .safetensors/.pth>: visattn does not download weights "
            f"(or use checkpoint_path= to load a full visattn checkpoint of {name!r})"
        )
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if pretrained_file is not None:
        path = Path(pretrained_file)
        if not path.is_file():
            raise FileNotFoundError(f"pretrained_file {str(path)!r} does not exist")
        kwargs["pretrained_cfg_overlay"] = {**kwargs.get("pretrained_cfg_overlay", {}), "file": str(path)}
    if checkpoint_path is not None and not Path(checkpoint_path).is_file():
        raise FileNotFoundError(f"checkpoint_path {str(checkpoint_path)!r} does not exist")
    try:
        return timm.create_model(
            name,
            pretrained=pretrained,
            checkpoint_path=str(checkpoint_path) if checkpoint_path else "",
            **kwargs,
        )
    except TypeError as err:
        unknown = unexpected_keyword(err)
        if unknown is None or unknown not in kwargs:
            raise
        raise ValueError(unknown_option_message(f"model {name!r}", unknown, model_options(name))) from None
    except RuntimeError as err:  # a weights file that does not fit: strict loading, one message naming it
        source = pretrained_file or checkpoint_path
        if source is None or "state_dict" not in str(err):
            raise
        detail = [line.strip() for line in str(err).splitlines()[1:] if line.strip()]
        raise ValueError(
            f"{source}: the weights do not fit model {name!r}: {'; '.join(detail[:4])}"
        ) from None


def model_options(name: str) -> list[str]:
    """Keyword arguments a model accepts: its entrypoint's and those of the ``nn.Module`` classes of the
    entrypoint's module (where the entrypoint's ``**kwargs`` go)."""
    fn = _MODELS[name]
    names = {p for p in inspect.signature(fn).parameters if p not in ("kwargs", "pretrained")}
    module = sys.modules.get(fn.__module__)
    for obj in vars(module).values() if module is not None else ():
        if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == fn.__module__:
            params = inspect.signature(obj.__init__).parameters
            names |= {
                p
                for p, v in params.items()
                if p != "self" and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)
            }
    return sorted(names | {"num_classes", "in_chans", "drop_rate"})


def model_in_chans(model: nn.Module) -> int | None:
    """Channels the model's first convolution takes (``None`` for a model without one)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return int(first.in_channels) if first is not None else None


def input_config(model: nn.Module, img_size: int | None = None) -> dict[str, Any]:
    """What the model expects as input: timm's ``resolve_data_config(model=...)`` (``input_size``, ``mean``,
    ``std``, ``interpolation``, ``crop_pct``) with the channel count the model really has (an ``in_chans``
    override is not in its ``pretrained_cfg``), ``mean``/``std`` matched to it, and ``img_size`` if given."""
    from timm.data import resolve_data_config

    from visattn.data.transforms import match_channels

    cfg = dict(resolve_data_config(model=model))
    c, h, w = (int(v) for v in cfg["input_size"])
    c = model_in_chans(model) or c
    if img_size is not None:
        h = w = int(img_size)
    cfg.update(
        input_size=(c, h, w),
        mean=tuple(match_channels(cfg["mean"], c)),
        std=tuple(match_channels(cfg["std"], c)),
    )
    return cfg
