"""CSRA: class-specific residual attention heads for multi-label recognition.

Paper: Ke Zhu, Jianxin Wu, "Residual Attention: A Simple but Effective Method for Multi-Label
Recognition", ICCV 2021, arXiv 2108.02456.
Official code: https://github.com/Kevinz-code/CSRA (PyTorch; ``pipeline/csra.py``). Re-implemented
in mmpretrain as ``CSRAClsHead`` (``mmpretrain/models/heads/multi_label_csra_head.py``).

One head with classifier ``m_c`` (a bias-free 1×1 convolution), temperature ``T`` and weight ``λ``
works on a feature map ``x`` of shape ``(B, d, h, w)`` in score space::

    S      = conv1x1(x, W) / ||W_c||_2          # (B, C, h, w); per-class norm over the d channels
    base   = mean_k S                           # class-agnostic average pooling
    att    = sum_k softmax_k(T·S) · S           # class-specific attention; max_k S when T = inf
    logit  = base + λ · att

Because the classifier is linear and bias-free this equals the paper's feature-space form
``m̂_cᵀ (g + λ Σ_k s_k^c x_k)``. :class:`MultiHeadCSRA` sums (not averages) the logits of heads with
different temperatures. :func:`residual_attention_logits` is the training-free "4 lines" of the
paper's Fig. 1, applied to a classifier trained with global average pooling.

Where visattn differs from, or extends, the official code:

- ``T = ∞`` (max-pooling) is ``math.inf``. The official sentinel ``T == 99`` is *not* special here:
  ``temperature=99`` is an ordinary (large) softmax temperature.
- Any number of heads via ``temperatures=[...]``; the official ``MHA`` only knows the table
  :data:`CSRA_TEMPERATURES` (1, 2, 4, 6, 8 heads) and raises ``KeyError`` otherwise.
- ``normalize=False`` drops the per-class division by ``||W_c||`` (the official code always
  normalises; the maintainer calls the un-normalised form an ablation, issue #9). With
  ``normalize=True`` the norm is taken from the live weight inside autograd, as in the official code.
  There is no epsilon, as in the official code: an all-zero class vector gives NaN.
- Temperatures must be ``> 0`` and ``λ`` finite and ``>= 0`` (the official code checks neither).
- For ``T = ∞`` the maximum goes through ``torch.max`` like the official code, so under ties the
  gradient reaches one position only.
- Caveat kept, not "fixed": the official README says the multi-head code with ``H = 1, T = ∞`` is
  exactly Fig. 1, but the table's ``H = 1`` entry is ``T = 1`` and the head normalises its classifier
  while Fig. 1 does not. Fig. 1 is :func:`residual_attention_logits` (with the FC bias), or
  ``CSRA(d, C, temperature=math.inf, normalize=False)`` for a bias-free classifier.
- :meth:`MultiHeadCSRA.load_official_state_dict` reads the official layout
  (``classifier.multi_head.{h}.head.weight``, optionally inside a whole-model state dict and/or with a
  ``module.`` prefix) and mmpretrain's (``head.csra_heads.{h}.head.weight``). Checkpoints store neither
  ``T`` nor ``λ``; head ``h`` of the file is loaded into head ``h`` here, whose temperature comes from
  this layer's own table / ``temperatures``.
- Under :func:`visattn.record_attention` each head records ``score`` (``S``) and ``attention`` (the
  softmax weights, one-hot at the arg-max for ``T = ∞``), both ``(B, C, h, w)``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from visattn.layers._official import export_mapped_state_dict, load_mapped_state_dict, strip_prefix
from visattn.recording import AttentionMapSource

__all__ = ["CSRA", "CSRA_TEMPERATURES", "MultiHeadCSRA", "residual_attention_logits"]

#: Official temperature per head, by number of heads (``math.inf`` where the official code has 99).
CSRA_TEMPERATURES: Mapping[int, tuple[float, ...]] = MappingProxyType(
    {
        1: (1.0,),
        2: (1.0, math.inf),
        4: (1.0, 2.0, 4.0, math.inf),
        6: (1.0, 2.0, 3.0, 4.0, 5.0, math.inf),
        8: (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, math.inf),
    }
)

# Checkpoint prefixes of the head list, by layout; the first matching layout wins.
_OFFICIAL_PREFIXES = (
    ("Kevinz-code/CSRA", "classifier.multi_head."),
    ("Kevinz-code/CSRA (head only)", "multi_head."),
    ("mmpretrain CSRAClsHead", "head.csra_heads."),
    ("mmpretrain CSRAClsHead (head only)", "csra_heads."),
)
_EXPORT_PREFIX = "classifier.multi_head."


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_lam(lam: object) -> float:
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    return float(lam)


def _check_temperature(temperature: object) -> float:
    # `not t > 0` also rejects NaN.
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be > 0 (math.inf for max-pooling), got {temperature!r}")
    return float(temperature)


class CSRA(AttentionMapSource, nn.Module):
    """One class-specific residual attention head: ``(B, d, h, w) -> (B, C)`` logits.

    Args:
        in_channels: feature channels ``d``.
        num_classes: classes ``C``.
        temperature: softmax temperature ``T > 0``; ``math.inf`` selects max-pooling over positions.
            (``99`` is an ordinary temperature, unlike in the official code.)
        lam: weight ``λ >= 0`` of the class-specific attention term.
        normalize: divide each class score map by the L2 norm of that class's weight vector (official
            behaviour). ``False`` uses the raw classifier.

    The classifier is ``self.head``, a bias-free ``nn.Conv2d(d, C, 1)``, so the official key
    ``...head.weight`` maps onto it unchanged. Default PyTorch initialisation, as in the official code.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        temperature: float = 1.0,
        lam: float = 0.1,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_classes", num_classes)
        self.temperature = _check_temperature(temperature)
        self.lam = _check_lam(lam)
        self.normalize = bool(normalize)
        self.head = nn.Conv2d(in_channels, num_classes, 1, bias=False)

    def score_map(self, x: torch.Tensor) -> torch.Tensor:
        """Class score maps ``S`` of shape ``(B, C, h, w)``."""
        score = self.head(x)
        if self.normalize:
            # Norm of each class vector over its d input channels, kept in the graph on purpose.
            norm = torch.linalg.vector_norm(self.head.weight, dim=(1, 2, 3))
            score = score / norm.view(1, -1, 1, 1)
        return score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.score_map(x)
        flat = score.flatten(2)
        base = flat.mean(dim=2)
        if self.temperature == math.inf:
            att, index = flat.max(dim=2)
            if self.is_recording:
                one_hot = torch.zeros_like(flat).scatter_(2, index.unsqueeze(2), 1.0)
                self._record("attention", one_hot.view_as(score))
        else:
            weights = torch.softmax(flat * self.temperature, dim=2)
            att = (weights * flat).sum(dim=2)
            self._record("attention", weights.view_as(score))
        self._record("score", score)
        return base + self.lam * att

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, lam={self.lam}, normalize={self.normalize}"


class MultiHeadCSRA(nn.Module):
    """Sum of :class:`CSRA` heads with different temperatures (the official ``MHA``).

    Args:
        in_channels: feature channels ``d``.
        num_classes: classes ``C``.
        num_heads: number of heads. Without ``temperatures`` it must be a key of
            :data:`CSRA_TEMPERATURES` (1, 2, 4, 6, 8); ``None`` means 1, or ``len(temperatures)``.
        lam: ``λ`` shared by all heads.
        temperatures: one temperature per head (any count); overrides the official table.
        normalize: passed to every head.

    The heads live in ``self.heads`` (an ``nn.ModuleList``), so their maps are recorded under
    ``<name>.heads.<i>``. Output: the **sum** of the head logits, as in the official code, so the
    logit scale grows with the number of heads.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        num_heads: int | None = None,
        lam: float = 0.1,
        temperatures: Sequence[float] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if num_heads is not None:
            _check_positive_int("num_heads", num_heads)
        if temperatures is None:
            num_heads = 1 if num_heads is None else num_heads
            if num_heads not in CSRA_TEMPERATURES:
                raise ValueError(
                    f"num_heads={num_heads} has no official temperature setting; allowed values are "
                    f"{sorted(CSRA_TEMPERATURES)}, or pass temperatures=[...] (one per head) to use any "
                    "number of heads"
                )
            temps = CSRA_TEMPERATURES[num_heads]
        else:
            temps = tuple(temperatures)
            if not temps:
                raise ValueError("temperatures must hold at least one temperature, got an empty sequence")
            if num_heads is not None and num_heads != len(temps):
                raise ValueError(
                    f"num_heads={num_heads} does not match the {len(temps)} temperatures given "
                    f"({list(temps)}); omit num_heads or make them agree"
                )
        self.heads = nn.ModuleList(CSRA(in_channels, num_classes, t, lam, normalize) for t in temps)

    @property
    def temperatures(self) -> tuple[float, ...]:
        return tuple(head.temperature for head in self.heads)

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.heads[0](x)
        for head in self.heads[1:]:
            logit = logit + head(x)
        return logit

    def _key_map(self, prefix: str) -> dict[str, str]:
        return {f"{prefix}{h}.head.weight": f"heads.{h}.head.weight" for h in range(len(self.heads))}

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load the CSRA head weights of an official (Kevinz-code/CSRA) or mmpretrain checkpoint.

        Accepted: a whole-model state dict (backbone keys are ignored) or the head keys alone, with
        or without a ``module.`` prefix, in the layouts ``classifier.multi_head.{h}.head.weight``,
        ``multi_head.{h}.head.weight``, ``head.csra_heads.{h}.head.weight`` or
        ``csra_heads.{h}.head.weight``. An mmengine checkpoint dict (tensors under ``"state_dict"``)
        is unwrapped. Temperatures and ``λ`` are not in checkpoints; they stay as configured here.

        Raises:
            KeyError: no CSRA head keys found, or unexpected/missing keys under the head prefix.
            ValueError: head count or tensor shapes differ from this layer, or several layouts mixed.
        """
        if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
            state_dict = state_dict["state_dict"]
        sd = strip_prefix(state_dict)
        found = [(src, p) for src, p in _OFFICIAL_PREFIXES if any(k.startswith(p) for k in sd)]
        if not found:
            raise KeyError(
                "no CSRA head weights found: expected keys like 'classifier.multi_head.0.head.weight' "
                "(Kevinz-code/CSRA) or 'head.csra_heads.0.head.weight' (mmpretrain); first keys given: "
                f"{list(sd)[:5]}"
            )
        if len(found) > 1:
            raise ValueError(f"state dict mixes several CSRA head layouts: {[p for _, p in found]}")
        source, prefix = found[0]
        heads_sd = {k: v for k, v in sd.items() if k.startswith(prefix)}
        indices = set()
        for key in heads_sd:
            match = re.match(r"(\d+)\.", key[len(prefix) :])
            if match:
                indices.add(int(match.group(1)))
        if len(indices) != len(self.heads):
            raise ValueError(
                f"{source}: the checkpoint has {len(indices)} CSRA heads, but this MultiHeadCSRA has "
                f"{len(self.heads)}; build it with num_heads={len(indices)} (and the checkpoint's "
                "temperatures)"
            )
        load_mapped_state_dict(self, heads_sd, self._key_map(prefix), source=source)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """Head weights under the official keys ``classifier.multi_head.{h}.head.weight``."""
        return export_mapped_state_dict(self, self._key_map(_EXPORT_PREFIX))


def residual_attention_logits(
    feature_map: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    lam: float = 0.2,
) -> torch.Tensor:
    """Training-free residual attention ("4 lines", paper Fig. 1) for a GAP + linear classifier.

    ``y_raw = W x_k + b`` at every position ``k``; ``score = mean_k y_raw + lam · max_k y_raw``. No
    classifier normalisation, one head, ``T = ∞``; meant for test time on a trained model.

    Args:
        feature_map: ``(B, d, h, w)`` features that the model would average-pool.
        weight: the linear classifier's weight, ``(C, d)`` (``nn.Linear``) or ``(C, d, 1, 1)``.
        bias: optional ``(C,)`` bias, applied at every position.
        lam: weight of the max term. Default ``0.2``: the paper's value for this experiment could not
            be verified, and 0.2 is the default of the only public port we know
            (xmu-xiaoma666/External-Attention-pytorch, ``ResidualAttention``); it lies within the
            0.1-0.5 range the official trained heads use. Tune it on validation data.

    Returns:
        ``(B, C)`` logits. With ``lam=0`` they equal ``W · GAP(x) + b`` (the original classifier)
        up to float rounding, because the classifier is affine. This does not hold for a ViT head
        trained on the CLS token and applied to patch tokens: there the result is an approximation.
    """
    if feature_map.dim() != 4:
        raise ValueError(f"feature_map must be (B, d, h, w), got shape {tuple(feature_map.shape)}")
    if weight.dim() == 4 and weight.shape[2:] == (1, 1):
        weight = weight.flatten(1)
    if weight.dim() != 2 or weight.shape[1] != feature_map.shape[1]:
        raise ValueError(
            f"weight must be (C, d) or (C, d, 1, 1) with d={feature_map.shape[1]} (the feature "
            f"channels), got shape {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    lam = _check_lam(lam)
    y_raw = F.conv2d(feature_map, weight[:, :, None, None], bias).flatten(2)
    return y_raw.mean(dim=2) + lam * y_raw.max(dim=2).values
