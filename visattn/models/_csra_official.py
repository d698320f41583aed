"""Official CSRA checkpoint layouts (spec §10): key mapping shared by the converter and ``pretrained_file``.

Kevinz-code/CSRA keeps its heads under ``classifier.multi_head.{h}.head.weight`` and the backbone at the
top level; mmpretrain under ``head.csra_heads.{h}.head.weight`` with the backbone under ``backbone.``.
:func:`map_official` maps either to :class:`visattn.models.csra.CSRANet` keys,
:func:`checkpoint_filter_fn` is the timm ``pretrained_filter_fn`` of the CSRA entrypoints, and
:data:`OFFICIAL_LAM` holds the README's ``λ`` per head count (``λ`` is not stored in checkpoints). The
``"csra-official"`` converter itself is registered in :mod:`visattn.models.csra`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["OFFICIAL_LAM", "checkpoint_filter_fn", "map_official"]


# (head prefix, backbone prefix): Kevinz-code/CSRA, mmpretrain.
_HEAD_LAYOUTS = (("classifier.multi_head.", ""), ("head.csra_heads.", "backbone."))
#: λ per number of heads from the official README (not stored in checkpoints).
OFFICIAL_LAM = {"resnet": {1: 0.1, 4: 0.5, 6: 0.4}, "vit": {1: 0.3}}


def _strip_module(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {re.sub(r"^(module\.)+", "", k): v for k, v in sd.items()}


def map_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official / mmpretrain keys → CSRANet keys (no validation against a model yet)."""
    sd = _strip_module(state_dict)
    if any(re.fullmatch(r"head\d+\.weight", k) for k in sd):
        raise ValueError(
            "this is a released COCO ViT-L CSRA checkpoint (keys 'head1.weight' … 'head8.weight', 'head.weight'): "
            "the released code cannot load it either (issue #18) and its head layout is undocumented; refusing to guess"
        )
    layouts = [(h, b) for h, b in _HEAD_LAYOUTS if any(k.startswith(h) for k in sd)]
    if len(layouts) != 1:
        raise KeyError(
            "expected CSRA head keys 'classifier.multi_head.{h}.head.weight' (Kevinz-code/CSRA) or "
            f"'head.csra_heads.{{h}}.head.weight' (mmpretrain); first keys given: {list(sd)[:6]}"
        )
    head_prefix, body_prefix = layouts[0]
    out, bad = {}, []
    for key, value in sd.items():
        match = re.fullmatch(re.escape(head_prefix) + r"(\d+)\.head\.weight", key)
        if match:
            out[f"classifier.heads.{int(match.group(1))}.head.weight"] = value
        elif key.startswith(body_prefix) and not key.startswith(head_prefix):
            out["backbone.model." + key[len(body_prefix) :]] = value
        else:
            bad.append(key)
    if bad:
        raise KeyError(f"unexpected keys for the CSRA checkpoint layout ({head_prefix}…): {bad[:10]}")
    return out


def _looks_official(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(
        k.removeprefix("module.").startswith(("classifier.multi_head.", "head.csra_heads.")) for k in sd
    )


def checkpoint_filter_fn(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn``: accept official layouts; a classifier of another shape (number of
    heads or classes) is not loaded (warned: the heads stay freshly initialised), as timm does."""
    sd = map_official(state_dict) if _looks_official(state_dict) else _strip_module(state_dict)
    own = model.state_dict()
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = value
    file_head = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("classifier.")}
    own_head = {k: tuple(v.shape) for k, v in own.items() if k.startswith("classifier.")}
    if file_head != own_head:
        if own_head:
            found = (
                f"{len(file_head)} heads × {next(iter(file_head.values()))[0]} classes"
                if file_head
                else "no heads"
            )
            warnings.warn(
                f"the checkpoint has {found}, this model {len(own_head)} heads × {next(iter(own_head.values()))[0]} "
                "classes (num_heads / num_classes): its CSRA heads stay freshly initialised",
                stacklevel=2,
            )
        sd = {k: v for k, v in sd.items() if not k.startswith("classifier.")}
        sd.update({k: v for k, v in own.items() if k.startswith("classifier.")})  # keep the fresh heads
    return sd
