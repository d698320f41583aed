"""Recording the attention maps of visattn layers.

Every visattn attention layer derives from :class:`AttentionMapSource`. While a model is inside
``with record_attention(model) as maps:``, each such layer stores the maps it computed in its forward
pass in ``maps[<module name>][<kind>]``. Outside that context the only cost is one attribute test per
layer call: nothing is kept, copied or computed for recording.

Recorded kinds and shapes (``B`` batch, ``C`` channels/classes, ``H×W`` the layer's spatial size):

==========================  =============  ========================================================
layer                       kind           shape / meaning
==========================  =============  ========================================================
``CSRA``                    ``score``      ``(B, C, h, w)`` class score maps ``S`` (normalised classifier)
                            ``attention``  ``(B, C, h, w)`` spatial softmax ``softmax(T·S)``; one-hot at
                                           the arg-max for ``T = inf``
``ChannelOnlyAttention``    ``channel``    ``(B, C, 1, 1)`` channel weights ``A_ch`` in (0, 1)
``SpatialOnlyAttention``    ``spatial``    ``(B, 1, H, W)`` spatial mask ``A_sp`` in (0, 1)
``AttentionModule`` (RAN)   ``mask``       ``(B, C, H, W)`` soft mask ``M``
``AttentionAggregation``    ``mask``       ``(B, C, h, w)`` per-class spatial softmax ``M`` (sums to 1)
                            ``confidence`` ``(B, C, h, w)`` sigmoid confidence map
SAN pairwise / patchwise    ``weights``    ``(B, Cw, K*K, H_out, W_out)`` aggregation weights
==========================  =============  ========================================================

Composite layers (``MultiHeadCSRA``, ``PolarizedSelfAttention``, ``SelfAttentionBottleneck``) record
nothing themselves; their sub-layers appear under their own names (e.g. ``head.heads.0``,
``psa.channel``, ``block.attention``). If a layer runs several times in one ``with`` block, the last
call wins.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["AttentionMapSource", "record_attention"]


class AttentionMapSource:
    """Mixin for ``nn.Module`` subclasses that can publish attention maps.

    Subclasses call ``self._record(kind, tensor)`` from ``forward``; guard any extra computation done
    only for recording with ``if self.is_recording:``.
    """

    # Class-level default: an instance attribute exists only while recording.
    _attention_store: dict[str, torch.Tensor] | None = None
    _attention_detach: bool = True

    @property
    def is_recording(self) -> bool:
        return self._attention_store is not None

    def _record(self, kind: str, value: torch.Tensor) -> None:
        store = self._attention_store
        if store is not None:
            store[kind] = value.detach() if self._attention_detach else value


@contextmanager
def record_attention(model: nn.Module, detach: bool = True) -> Iterator[dict[str, dict[str, torch.Tensor]]]:
    """Collect every visattn attention map computed by ``model`` inside the ``with`` block.

    Args:
        model: any module; visattn layers anywhere inside it are recorded.
        detach: store detached tensors (default). ``False`` keeps the autograd graph, e.g. to
            back-propagate through a map.

    Yields:
        ``maps``: a dict keyed by module name (``""`` for ``model`` itself) whose values are dicts
        ``{kind: tensor}`` (kinds and shapes: see this module's docstring). Layers that did not run are
        absent once the block exits.

    Example:
        >>> with record_attention(model) as maps:
        ...     logits = model(images)
        >>> maps["head.heads.0"]["score"].shape
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"record_attention expects an nn.Module, got {type(model).__name__}")
    maps: dict[str, dict[str, torch.Tensor]] = {}
    previous = []
    for name, module in model.named_modules():
        if isinstance(module, AttentionMapSource):
            store: dict[str, torch.Tensor] = {}
            maps[name] = store
            previous.append(
                (module, module.__dict__.get("_attention_store"), module.__dict__.get("_attention_detach"))
            )
            object.__setattr__(module, "_attention_store", store)
            object.__setattr__(module, "_attention_detach", detach)
    try:
        yield maps
    finally:
        for module, old_store, old_detach in previous:
            for attr, old in (("_attention_store", old_store), ("_attention_detach", old_detach)):
                if old is None:
                    module.__dict__.pop(attr, None)
                else:
                    object.__setattr__(module, attr, old)
        for name in [n for n, store in maps.items() if not store]:
            del maps[name]
