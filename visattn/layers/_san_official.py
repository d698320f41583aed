"""Official ``hszhao/SAN`` key layout for the SAN layers: submodule renames and the load/export mixin.

The official ``SAM`` names its submodules ``conv1``/``conv2``/``conv3``/``conv_w``/``conv_p``; visattn
uses ``phi``/``psi``/``beta``/``gamma``/``pos_proj`` with identical tensor layouts, so translating is a
key rename (:func:`rename_keys`). :class:`OfficialLayoutMixin` adds ``load_official_state_dict`` /
``official_state_dict`` to any layer that defines ``_official_key_map``. Used by
:mod:`visattn.layers.san`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from visattn.layers._official import export_mapped_state_dict, load_mapped_state_dict, select_prefix

__all__ = ["SAM_NAMES", "OfficialLayoutMixin", "rename_keys"]


# (official name, visattn name) of the SAM submodules; tensor layouts are identical.
SAM_NAMES = (("conv1", "phi"), ("conv2", "psi"), ("conv3", "beta"), ("conv_w", "gamma"))


def rename_keys(module: nn.Module, pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Official key -> own key for every tensor of ``module`` under the (official, own) name pairs."""
    out = {}
    for key in module.state_dict():
        for official, own in pairs:
            if key.startswith(own + "."):
                out[official + key[len(own) :]] = key
    return out


class OfficialLayoutMixin:
    """``load_official_state_dict`` / ``official_state_dict`` on top of ``_official_key_map``."""

    _official_source = "hszhao/SAN"

    def _official_key_map(self) -> dict[str, str]:
        raise NotImplementedError

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> None:
        """Load tensors in the official ``hszhao/SAN`` layout.

        Args:
            state_dict: official tensors; ``module.`` prefixes are stripped.
            prefix: leading key prefix of this module in the checkpoint (e.g. ``"layer1.0."`` or
                ``"layer1.0.sam."``); keys outside it are ignored, so a whole-network state dict can
                be passed.

        Raises:
            ValueError: this configuration has no official layout, or a tensor has the wrong shape.
            KeyError: keys missing or unexpected.
        """
        key_map = self._official_key_map()
        load_mapped_state_dict(self, select_prefix(state_dict, prefix), key_map, source=self._official_source)

    def official_state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """This module's tensors under the official keys (each preceded by ``prefix``)."""
        sd = export_mapped_state_dict(self, self._official_key_map())
        return {prefix + k: v for k, v in sd.items()}
