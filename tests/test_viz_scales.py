"""Colour scales, aspect ratio and title layout of the visattn.viz figures (no training: small fixed models).

Every check reads what was drawn: the ``AxesImage`` of a panel (its norm and array), axes and text window
extents after an Agg draw.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib")

import matplotlib  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from visattn.layers import (  # noqa: E402
    CSRA,
    AttentionAggregation,
    AttentionModule,
    ChannelOnlyAttention,
    SpatialOnlyAttention,
)
from visattn.viz import attention_panels, collect_attention, render_contact_sheet, visualize  # noqa: E402
from visattn.viz.report import plot_confusion_matrix, plot_curves, plot_per_class  # noqa: E402

CLASSES = ["present", "absent"]


class _TwoClassCSRA(nn.Module):
    """A CSRA head whose class ``present`` scores high everywhere and class ``absent`` low everywhere.

    Features ``4x + 2`` of an image ``x`` in [0, 1] are in [2, 6] on each of 3 channels; the classifier
    vectors are ``+1`` and ``-1`` (normalised), so ``S_present`` is in [3.5, 10.4] and ``S_absent`` the
    negative: p(absent) ~ 0.001, yet each map varies over the image, so a per-map stretch spans the whole
    colour map for both.
    """

    def __init__(self) -> None:
        super().__init__()
        self.head = CSRA(3, 2, temperature=1.0, lam=0.1)
        with torch.no_grad():
            self.head.head.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1).expand(2, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(4 * x + 2)


def _image(height: int = 32, width: int = 64) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(3, height, width)


def _panel_axes(fig, text: str):
    """The axes whose title contains ``text`` (exactly one)."""
    found = [ax for ax in fig.axes if text in ax.get_title()]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def _heat(ax):
    """The heat map drawn on a panel (drawn over the input image, which is ``images[0]``)."""
    assert len(ax.images) == 2
    return ax.images[-1]


def _normalised(im) -> np.ndarray:
    """The values of ``im`` as the colour map sees them: 0 is its bottom (cold), 1 its top (hot)."""
    return np.asarray(np.ma.filled(im.norm(im.get_array()), np.nan), dtype=np.float64)


# ---------------------------------------------------------------------------------------------- colour scales
@pytest.mark.parametrize("multilabel", [True, False], ids=["sigmoid", "softmax"])
def test_csra_absent_class_is_cold_and_present_class_hot(multilabel):
    model = _TwoClassCSRA().eval()
    fig = visualize(model, _image(), class_names=CLASSES, multilabel=multilabel, topk=2)
    with torch.no_grad():
        logits = model(_image().unsqueeze(0))[0]
    probs = torch.sigmoid(logits) if multilabel else torch.softmax(logits, 0)
    assert probs[1] < 0.01 < 0.99 < probs[0]
    absent, present = _panel_axes(fig, "class absent"), _panel_axes(fig, "class present")
    assert np.nanmax(_normalised(_heat(absent))) < 0.1  # p ~ 0.001: cold everywhere
    assert np.nanmin(_normalised(_heat(present))) > 0.9  # p ~ 0.999: hot everywhere
    # The title keeps the class probability; the colour bar says what the colours are.
    assert f"p={float(probs[1]):.2f}" in absent.get_title()
    assert f"p={float(probs[0]):.2f}" in present.get_title()
    for ax in (absent, present):
        im = _heat(ax)
        assert (im.norm.vmin, im.norm.vmax) == (0.0, 1.0)
        expected = "sigmoid(S)" if multilabel else "softmax over classes of S"
        assert im.colorbar.ax.get_ylabel() == f"{expected}, 0–1"


def test_per_map_scale_is_still_available():
    model = _TwoClassCSRA().eval()
    record = collect_attention(model, _image().unsqueeze(0))
    panels = attention_panels(record, class_names=CLASSES, topk=2)
    fig = render_contact_sheet(_image(), panels, scale="per-map")
    score = record.maps["head"]["score"][0, 1].numpy()  # the raw class score map S of "absent"
    im = _heat(_panel_axes(fig, "class absent"))
    np.testing.assert_allclose((im.norm.vmin, im.norm.vmax), (score.min(), score.max()), rtol=1e-6)
    np.testing.assert_array_equal(im.get_array(), score)
    assert np.nanmax(_normalised(im)) == pytest.approx(1.0)  # stretched: the absent class looks hot
    assert im.colorbar.ax.get_ylabel() == "raw, per-map min–max"
    with pytest.raises(ValueError, match="scale"):
        render_contact_sheet(_image(), panels, scale="auto")


class _VAA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.vaa = AttentionAggregation(3, 3, feature_size=4, sr_pool="adaptive", att_channels=(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vaa(x)


def test_vaa_mask_carries_the_class_probability():
    model = _VAA().eval()
    record = collect_attention(model, _image().unsqueeze(0))
    # The prediction this test controls: class 0 certain, class 1 rejected, class 2 undecided.
    record = dataclasses.replace(record, output=torch.tensor([[8.0, -8.0, 0.0]]))
    panels = attention_panels(record, class_names=["a", "b", "c"], topk=3)
    fig = render_contact_sheet(_image(), panels)
    mask = record.maps["vaa"]["mask"][0]
    assert np.nanmax(_normalised(_heat(_panel_axes(fig, "class b")))) < 0.1  # p = 0.0003: cold
    for name, p in (("a", torch.sigmoid(torch.tensor(8.0))), ("b", torch.sigmoid(torch.tensor(-8.0)))):
        ax = _panel_axes(fig, f"class {name}")
        im = _heat(ax)
        assert (im.norm.vmin, im.norm.vmax) == (0.0, 1.0)
        assert im.colorbar.ax.get_ylabel() == "p · M / max M, 0–1"
        assert np.nanmax(_normalised(im)) == pytest.approx(float(p), rel=1e-5)  # the peak has the colour of p
        assert f"p={float(p):.2f}" in ax.get_title()
    c = _heat(_panel_axes(fig, "class c"))
    np.testing.assert_allclose(c.get_array(), 0.5 * (mask[2] / mask[2].max()).numpy(), rtol=1e-5)


class _Masks(nn.Module):
    """RAN soft mask, PSA spatial mask and PSA channel weights on a small feature map."""

    def __init__(self, mask_activation: str = "mixed") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.ran = AttentionModule(8, num_pools=1, p=0, t=0, r=0, mask_activation=mask_activation)
        self.spatial = SpatialOnlyAttention(8)
        self.channel = ChannelOnlyAttention(8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel(self.spatial(self.ran(self.stem(x))))
        return self.fc(x.mean((2, 3)))


def test_masks_are_drawn_on_zero_to_one():
    model = _Masks().eval()
    record = collect_attention(model, _image().unsqueeze(0))
    fig = render_contact_sheet(_image(), attention_panels(record))
    spatial = record.maps["spatial"]["spatial"][0, 0].numpy()
    assert spatial.max() - spatial.min() < 0.5  # a per-map stretch would exaggerate this contrast
    for title, label in (("PSA spatial", "mask A_sp, 0–1"), ("RAN ran", "mask M (mean over ch), 0–1")):
        im = _heat(_panel_axes(fig, title))
        assert (im.norm.vmin, im.norm.vmax) == (0.0, 1.0)
        assert im.colorbar.ax.get_ylabel() == label
    np.testing.assert_array_equal(_heat(_panel_axes(fig, "PSA spatial")).get_array(), spatial)
    bars = _panel_axes(fig, "channel weights")
    assert bars.get_ylim() == (0.0, 1.0) and not bars.images


def test_signed_ran_mask_keeps_a_per_map_scale():
    # mask_activation="channel" is an L2 direction, not a value in (0, 1): no fixed scale to draw it on.
    model = _Masks("channel").eval()
    record = collect_attention(model, _image().unsqueeze(0))
    fig = render_contact_sheet(_image(), attention_panels(record, layers=["ran"]))
    mean = record.maps["ran"]["mask"][0].mean(0).numpy()
    im = _heat(_panel_axes(fig, "RAN ran"))
    np.testing.assert_allclose((im.norm.vmin, im.norm.vmax), (mean.min(), mean.max()), rtol=1e-6)
    assert im.colorbar.ax.get_ylabel() == "per-map min–max"


def test_gradcam_panels_on_zero_to_one(monkeypatch):
    """Grad-CAM maps come normalised per map by pytorch-grad-cam: drawn on [0, 1], labelled as such."""
    from visattn.viz import gradcam

    cams = np.stack([np.linspace(0.2, 0.6, 32 * 64).reshape(32, 64)] * 2)
    monkeypatch.setattr(
        gradcam, "gradcam_maps", lambda model, x, classes, layer, method: cams[: len(classes)]
    )
    panels = gradcam.gradcam_panels(_TwoClassCSRA(), _image(), [0, 1], CLASSES, target_layer="head")
    fig = render_contact_sheet(_image(), panels)
    im = _heat(_panel_axes(fig, "class absent"))
    assert (im.norm.vmin, im.norm.vmax) == (0.0, 1.0)
    assert im.colorbar.ax.get_ylabel() == "Grad-CAM (per-map norm.), 0–1"


# ---------------------------------------------------------------------------------------------- aspect ratio
@pytest.mark.parametrize("image_aspect", ["equal", "auto"], ids=["rc-equal", "rc-auto"])
@pytest.mark.parametrize(("height", "width"), [(32, 64), (64, 32)], ids=["wide", "tall"])
def test_non_square_input_keeps_its_aspect_ratio(height, width, image_aspect):
    """Also under a style with ``image.aspect: auto`` (a notebook theme), which used to fill the cell."""
    with matplotlib.rc_context({"image.aspect": image_aspect}):
        fig = visualize(_TwoClassCSRA().eval(), _image(height, width), class_names=CLASSES, topk=2)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
    renderer = canvas.get_renderer()
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 3  # the input and the two class maps
    for ax in image_axes:
        box = ax.get_window_extent(renderer)
        assert box.width / box.height == pytest.approx(width / height, rel=0.02), ax.get_title()
        for im in ax.images:  # the maps cover the whole input, pixel centres at integers
            assert tuple(im.get_extent()) == (-0.5, width - 0.5, height - 0.5, -0.5)


# ---------------------------------------------------------------------------------------------- titles
LONG_RUN = "glyph_canvas_csra_resnet101_lambda0.3_T1-2-4-inf_seed12345_" * 3
LONG_TITLE = f"run {LONG_RUN}: csra_resnet101_pretrained_on_imagenet21k"


def _texts_inside(fig) -> list[str]:
    """Draw ``fig`` with Agg; every figure and axes title must lie inside the figure. Returns the titles."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    texts = [t for t in fig.texts if t.get_text()] + [ax.title for ax in fig.axes if ax.get_title()]
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, (text.get_text(), extent, box)
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, (text.get_text(), extent, box)
    return [t.get_text() for t in texts]


def _same_words(shown: str, original: str) -> bool:
    """Wrapping only adds line breaks (a break may replace a space): no character is lost."""
    return "".join(shown.split()) == "".join(original.split())


def test_report_titles_fit_the_figure():
    log = {
        "epoch": np.arange(1.0, 4.0),
        "train_loss": np.array([1.0, 0.5, 0.3]),
        "lr": np.array([0.1, 0.01, 0.001]),
        "mAP_of_the_exponential_moving_average": np.array([0.5, 0.6, 0.7]),
        "nll": np.array([2.0, 1.0, 0.5]),
    }
    curves = plot_curves(log, "mAP_of_the_exponential_moving_average", title=LONG_TITLE)
    texts = _texts_inside(curves)
    assert any(_same_words(t, LONG_TITLE) for t in texts)
    best = "validation metrics (best mAP_of_the_exponential_moving_average 0.7, epoch 3)"
    assert any(_same_words(t, best) for t in texts)
    per_class_title = f"{LONG_TITLE}: per-class AP, best checkpoint"
    per_class = plot_per_class(np.linspace(0.1, 0.9, 10), None, "AP", title=per_class_title)
    assert any(_same_words(t, per_class_title) for t in _texts_inside(per_class))
    confusion = plot_confusion_matrix(np.eye(3) * 5 + 1, ["a" * 30, "b", "c"], title=LONG_TITLE)
    assert any(_same_words(t, LONG_TITLE) for t in _texts_inside(confusion))


def test_contact_sheet_titles_fit_the_figure():
    fig = visualize(_TwoClassCSRA().eval(), _image(), class_names=CLASSES, topk=2, title=LONG_TITLE, ncols=3)
    texts = _texts_inside(fig)
    assert any(LONG_RUN[:20] in t for t in texts)


def test_cli_visualize_accepts_the_scale_option():
    from visattn.cli import build_parser

    args = build_parser().parse_args(["visualize", "x.png", "--out", "o", "--scale", "per-map"])
    assert args.scale == "per-map"
    assert build_parser().parse_args(["visualize", "x.png", "--out", "o"]).scale == "fixed"
