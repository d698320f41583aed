"""Recording a forward pass and turning every recorded attention map into :class:`Panel` objects.

:func:`collect_attention` runs the model once under :func:`visattn.record_attention`;
:func:`attention_panels` maps each visattn layer's maps to panels (the table in :mod:`visattn.viz.overlay`),
including :func:`san_footprint` for SAN's aggregation weights. Private part of :mod:`visattn.viz.overlay`
(import from there); drawing is in ``_sheet.py``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from visattn.layers import (
    CSRA,
    AttentionAggregation,
    AttentionModule,
    ChannelOnlyAttention,
    SpatialOnlyAttention,
)
from visattn.recording import AttentionMapSource, record_attention

GROUP_ORDER = ("CSRA", "VAA", "RAN", "PSA", "SAN", "Grad-CAM", "other")


# ---------------------------------------------------------------------------------------------- recording
@dataclass
class AttentionRecord:
    """Output and attention maps of one forward pass.

    Attributes:
        output: the model output (usually logits ``(B, C)``).
        maps: ``{module name: {kind: tensor}}`` as yielded by :func:`visattn.record_attention`.
        input_sizes: spatial size ``(H, W)`` of each recorded layer's input.
        modules: the recorded modules by name.
        image_size: ``(H, W)`` of the model input.
    """

    output: Any
    maps: dict[str, dict[str, torch.Tensor]]
    input_sizes: dict[str, tuple[int, int]]
    modules: dict[str, nn.Module]
    image_size: tuple[int, int]


@torch.no_grad()
def collect_attention(model: nn.Module, images: torch.Tensor) -> AttentionRecord:
    """Run ``model`` on ``images (B, C, H, W)`` in eval mode and keep every recorded attention map."""
    if images.dim() == 3:
        images = images.unsqueeze(0)
    modules = {n: m for n, m in model.named_modules() if isinstance(m, AttentionMapSource)}
    sizes: dict[str, tuple[int, int]] = {}

    def hook(name: str):
        def pre(_module, args):
            if args and torch.is_tensor(args[0]) and args[0].dim() == 4:
                sizes[name] = tuple(int(s) for s in args[0].shape[-2:])

        return pre

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        with record_attention(model) as maps:
            output = model(images)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    maps = {n: {k: v.float().cpu() for k, v in kinds.items()} for n, kinds in maps.items()}
    return AttentionRecord(
        output=output,
        maps=maps,
        input_sizes=sizes,
        modules={n: modules[n] for n in maps},
        image_size=(int(images.shape[-2]), int(images.shape[-1])),
    )


# ---------------------------------------------------------------------------------------------- panels
@dataclass
class Panel:
    """One cell of a contact sheet: a heat map over the image, or a bar chart.

    The colour of a heat map must mean the same on every panel of a kind: a per-map min–max stretch draws
    a class of probability 0.03 as hot as one of 0.97, and a PSA mask spanning 0.40–0.56 as a
    high-contrast picture. So a panel carries, next to the raw ``heat``, the map to draw on a fixed
    scale (``shown`` on ``vrange``, described by ``label``); ``render_contact_sheet(scale="per-map")``
    still draws the raw map stretched to its own min and max.

    Attributes:
        title: label (module name, class, value range).
        group: attention type (``"CSRA"``, ``"VAA"``, ``"RAN"``, ``"PSA"``, ``"SAN"``, ``"Grad-CAM"``, ...);
            each group starts a new row of the sheet.
        heat: ``(h, w)`` map as recorded (e.g. the CSRA score ``S``), stretched over the whole image.
        bars: 1-D values drawn as a bar chart (PSA channel weights).
        points: ``(y, x)`` image pixels to mark (SAN query pixels, CSRA peaks).
        shown: the map drawn on the ``vrange`` scale when it differs from ``heat`` (e.g. ``sigmoid(S)``).
        vrange: colour range of ``shown`` (or ``heat``); ``None``: the map's own min and max.
        label: what the colour bar shows (``"sigmoid(S), 0–1"``); empty: a per-map min–max label.
        nearest: nearest-neighbour display (SAN footprints) instead of bilinear (always for maps with a
            side of 4 cells or fewer, where smoothing would invent structure).
        class_name: the class the map belongs to (ground-truth boxes of that class are drawn).
        module, kind: where the map was recorded.
    """

    title: str
    group: str = "other"
    heat: np.ndarray | None = None
    bars: np.ndarray | None = None
    points: tuple[tuple[float, float], ...] = ()
    shown: np.ndarray | None = None
    vrange: tuple[float, float] | None = None
    label: str = ""
    nearest: bool = False
    class_name: str | None = None
    module: str = ""
    kind: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _scores(output: Any, multilabel: bool) -> torch.Tensor | None:
    if isinstance(output, Mapping):
        output = output.get("logits", next(iter(output.values()), None))
    if isinstance(output, (tuple, list)):
        output = output[0] if output else None
    if not torch.is_tensor(output) or output.dim() != 2:
        return None
    output = output.float().cpu()
    return torch.sigmoid(output) if multilabel else torch.softmax(output, dim=1)


def _name(class_names: Sequence[str] | None, c: int) -> str:
    return str(class_names[c]) if class_names is not None and c < len(class_names) else str(c)


def _top_classes(maps: torch.Tensor, probs: torch.Tensor | None, topk: int) -> list[tuple[int, float | None]]:
    """Top-k classes by predicted probability (or, if the map has other classes, by map peak)."""
    num = maps.shape[0]
    if probs is not None and probs.numel() == num:
        order = torch.argsort(probs, descending=True)[:topk]
        return [(int(c), float(probs[c])) for c in order]
    order = torch.argsort(maps.flatten(1).amax(1), descending=True)[:topk]
    return [(int(c), None) for c in order]


def _peak(heat: np.ndarray, image_size: tuple[int, int]) -> tuple[float, float]:
    h, w = heat.shape
    i = int(np.argmax(heat))
    # Cell centre in pixel coordinates (pixel centres are integers, as in the boxes).
    return ((i // w + 0.5) * image_size[0] / h - 0.5, (i % w + 0.5) * image_size[1] / w - 0.5)


def _reflect(i: int, n: int) -> int | None:
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = abs(i) % period
    return i if i < n else period - i


def san_footprint(
    weights: torch.Tensor,
    in_size: tuple[int, int],
    out_cell: tuple[int, int],
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    padding: int | None = None,
    padding_mode: str = "reflect",
) -> np.ndarray:
    """Where the aggregation weights of one output position read, on the layer's input grid.

    Args:
        weights: ``(Cw, K², H_out, W_out)`` SAN aggregation weights of one image.
        in_size: ``(H, W)`` of the layer input.
        out_cell: output position ``(h, w)``.
    Returns:
        ``(H, W)`` map: the mean over the ``Cw`` weight channels of each neighbour's weight, at the
        neighbour's input position (``docs/ops.md`` geometry); reflect-padded neighbours are folded back
        onto the pixels they read, zero-padded ones are dropped.
    """
    K = kernel_size
    p = dilation * (K - 1) // 2 if padding is None else padding
    yo, xo = out_cell
    w = weights[:, :, yo, xo].float().mean(0).cpu().numpy()
    grid = np.zeros(in_size, dtype=np.float64)
    H, W = in_size
    for kh in range(K):
        for kw in range(K):
            iy, ix = -p + yo * stride + kh * dilation, -p + xo * stride + kw * dilation
            if padding_mode == "reflect":
                iy, ix = _reflect(iy, H), _reflect(ix, W)
            elif not (0 <= iy < H and 0 <= ix < W):
                continue
            grid[iy, ix] += w[kh * K + kw]
    return grid


def _matches(name: str, layers: Sequence[str] | None) -> bool:
    return not layers or any(fnmatch.fnmatchcase(name, pattern) for pattern in layers)


def _temperature(module: nn.Module) -> str:
    t = getattr(module, "temperature", None)
    return "" if t is None else ("T=inf" if math.isinf(t) else f"T={t:g}")


def _class_panels(
    maps: torch.Tensor,
    probs: torch.Tensor | None,
    topk: int,
    class_names: Sequence[str] | None,
    size: tuple[int, int],
    title: str,
    family: str,
    module: str,
    kind: str,
    evidence: torch.Tensor | None = None,
    label: str = "",
) -> list[Panel]:
    """One panel per top-scoring class of a ``(num_classes, h, w)`` class-map stack (CSRA, VAA).

    ``evidence``: the stack drawn on the fixed scale [0, 1] (described by ``label``), computed from the
    whole stack because a softmax over classes needs every class; ``None`` draws the map per-map.
    """
    panels = []
    for c, p in _top_classes(maps, probs, topk):
        heat = maps[c].numpy()
        shown = None if evidence is None else evidence[c].numpy()
        prob = "" if p is None else f" p={p:.2f}"
        cname = _name(class_names, c)
        panels.append(
            Panel(
                f"{title}\nclass {cname}{prob}",
                family,
                heat=heat,
                points=(_peak(heat, size),),
                shown=shown,
                vrange=None if shown is None else (0.0, 1.0),
                label=label if shown is not None else "",
                class_name=cname,
                module=module,
                kind=kind,
            )
        )
    return panels


def _score_evidence(score: torch.Tensor, multilabel: bool) -> tuple[torch.Tensor, str]:
    """CSRA class score maps ``S (C, h, w)`` as per-position class probabilities, and their colour-bar label.

    ``S`` is a class logit at each position (the head's logit is its mean plus ``λ`` times its
    attention-weighted mean), so the sigmoid (multi-label) or the softmax over classes (single-label) that
    turns the model's logits into its prediction turns ``S`` into the class probability that position
    alone would give: an absent class stays cold wherever its score is low, instead of being stretched to
    red like a present one.
    """
    if multilabel:
        return torch.sigmoid(score), "sigmoid(S), 0–1"
    return torch.softmax(score, dim=0), "softmax over classes of S, 0–1"


def _mask_times_probability(mask: torch.Tensor, probs: torch.Tensor | None) -> torch.Tensor | None:
    """VAA spatial softmax ``M (C, h, w)`` relative to its peak, times the predicted class probability.

    ``M`` sums to 1 over the positions of every class, present or not, so it carries no class evidence of
    its own (and its values shrink with the grid size): the shape of ``M`` is shown and its peak gets the
    colour of the class probability ``p``. ``None`` when the output has no probability per class of the
    stack (then the map is drawn per-map).
    """
    if probs is None or probs.numel() != mask.shape[0]:
        return None
    peak = mask.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return mask / peak * probs.view(-1, 1, 1)


def attention_panels(
    record: AttentionRecord,
    index: int = 0,
    class_names: Sequence[str] | None = None,
    topk: int = 3,
    pixels: Sequence[tuple[float, float]] | None = None,
    layers: Sequence[str] | None = None,
    multilabel: bool = True,
) -> list[Panel]:
    """Panels of image ``index`` of ``record`` (see :mod:`visattn.viz.overlay` for what each layer gives).

    Args:
        class_names: output names, for titles and ground-truth boxes.
        topk: classes shown per CSRA head / VAA scale: the ``topk`` most probable ones.
        pixels: ``(y, x)`` image pixels whose SAN aggregation weights are shown (default: the centre).
        layers: shell-style patterns of module names to keep (default: all), e.g. ``["layer4.*"]``.
        multilabel: probabilities are sigmoids (else softmax) of the model output; CSRA score maps are
            drawn through the same function (``Panel.shown``).
    """
    H, W = record.image_size
    probs_all = _scores(record.output, multilabel)
    probs = probs_all[index] if probs_all is not None else None
    pixels = list(pixels) if pixels else [((H - 1) / 2, (W - 1) / 2)]
    panels: list[Panel] = []
    for name, kinds in record.maps.items():
        if not _matches(name, layers):
            continue
        module = record.modules.get(name)
        label = name or "<model>"
        if isinstance(module, CSRA) and "score" in kinds:
            score = kinds["score"][index]
            title = f"CSRA {label} {_temperature(module)}"
            evidence, bar = _score_evidence(score, multilabel)
            panels += _class_panels(
                score, probs, topk, class_names, (H, W), title, "CSRA", name, "score", evidence, bar
            )
        elif isinstance(module, AttentionAggregation) and "mask" in kinds:
            mask = kinds["mask"][index]
            title = f"VAA {label} {mask.shape[-2]}x{mask.shape[-1]}"
            evidence, bar = _mask_times_probability(mask, probs), "p · M / max M, 0–1"
            panels += _class_panels(
                mask, probs, topk, class_names, (H, W), title, "VAA", name, "mask", evidence, bar
            )
        elif isinstance(module, AttentionModule) and "mask" in kinds:
            mask = kinds["mask"][index]
            # "mixed"/"spatial" masks are sigmoids in (0, 1); the "channel" one is an L2 direction (signed).
            bounded = getattr(module, "mask_activation", "mixed") != "channel"
            panels.append(
                Panel(
                    f"RAN {label}\nsoft mask, mean of {mask.shape[0]} ch",
                    "RAN",
                    heat=mask.mean(0).numpy(),
                    vrange=(0.0, 1.0) if bounded else None,
                    label="mask M (mean over ch), 0–1" if bounded else "",
                    module=name,
                    kind="mask",
                )
            )
        elif isinstance(module, SpatialOnlyAttention) and "spatial" in kinds:
            panels.append(
                Panel(
                    f"PSA {label}\nspatial mask",
                    "PSA",
                    heat=kinds["spatial"][index, 0].numpy(),
                    vrange=(0.0, 1.0),  # a sigmoid: the factor each position is multiplied by
                    label="mask A_sp, 0–1",
                    module=name,
                    kind="spatial",
                )
            )
        elif isinstance(module, ChannelOnlyAttention) and "channel" in kinds:
            values = kinds["channel"][index].flatten().numpy()
            panels.append(
                Panel(
                    f"PSA {label}\nchannel weights ({values.size} ch)",
                    "PSA",
                    bars=values,
                    module=name,
                    kind="channel",
                )
            )
        elif "weights" in kinds and kinds["weights"].dim() == 5 and hasattr(module, "kernel_size"):
            weights = kinds["weights"][index]
            ho, wo = weights.shape[-2:]
            in_size = record.input_sizes.get(name, (ho * module.stride, wo * module.stride))
            for y, x in pixels:
                cell = (min(ho - 1, max(0, int(y * ho / H))), min(wo - 1, max(0, int(x * wo / W))))
                grid = san_footprint(
                    weights,
                    in_size,
                    cell,
                    module.kernel_size,
                    module.stride,
                    module.dilation,
                    getattr(module, "padding", None),
                    module.padding_mode,
                )
                k = module.kernel_size
                panels.append(
                    Panel(
                        f"SAN {label} K={k}\nweights at ({y:.0f},{x:.0f}), grid {in_size[0]}x{in_size[1]}",
                        "SAN",
                        heat=np.ma.masked_equal(grid, 0.0),
                        points=((y, x),),
                        # Softmax weights over the footprint (sum 1): 0 kept as the bottom of the scale.
                        vrange=(0.0, max(float(grid.max()), 1e-12)),
                        label="weight (sum 1), 0–max",
                        nearest=True,
                        module=name,
                        kind="weights",
                        extra={"cell": cell},
                    )
                )
        else:
            for kind, value in kinds.items():
                if value.dim() == 4:
                    panels.append(
                        Panel(
                            f"{type(module).__name__} {label}\n{kind}, mean of {value.shape[1]} ch",
                            "other",
                            heat=value[index].mean(0).numpy(),
                            module=name,
                            kind=kind,
                        )
                    )
    return panels
