"""Segmentation networks with and without PSA, whole-image and sliding-window inference."""

import pytest
import torch
from torch import nn

import visattn
from visattn.layers.polarized import PolarizedSelfAttention
from visattn.models import count_parameters
from visattn.models import segmentation as seg
from visattn.models.weights import load_weights, save_weights


def n_psa(model):
    return sum(isinstance(m, PolarizedSelfAttention) for m in model.modules())


def test_glyph_models_forward_backward_and_psa_placement(tmp_path):
    torch.manual_seed(0)
    base = visattn.create_model("seg_glyphnet")
    model = visattn.create_model("psa_seg_glyphnet", num_classes=4)
    x = torch.randn(2, 1, 48, 40)
    out = model(x)
    assert out.shape == (2, 4, 48, 40) and base(x).shape == (2, 11, 48, 40)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    assert n_psa(base) == 0 and n_psa(model) == 3
    assert n_psa(visattn.create_model("psa_seg_glyphnet", psa_levels="trunk")) == 1
    official = visattn.create_model("psa_seg_glyphnet", psa_variant="official", psa_layout="sequential")
    layer = next(m for m in official.modules() if isinstance(m, PolarizedSelfAttention))
    assert layer.variant == "official" and layer.layout == "sequential"
    model.eval()
    path = tmp_path / "m.safetensors"
    save_weights(model, path)
    fresh = load_weights(visattn.create_model("psa_seg_glyphnet", num_classes=4), path).eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))
    model.reset_classifier(6)
    assert model(x).shape == (2, 6, 48, 40) and model.get_classifier().out_channels == 6
    with pytest.raises(TypeError, match="psa_layout"):
        visattn.create_model("seg_glyphnet", psa_layout="parallel")
    with pytest.raises(TypeError, match="psa_levels"):
        visattn.create_model("seg_glyphnet", psa_levels="trunk")
    with pytest.raises(ValueError, match="psa_levels"):
        visattn.create_model("psa_seg_glyphnet", psa_levels=(7,))


def test_hrnet_psa_in_every_branch_basic_block():
    model = visattn.create_model("psa_seg_hrnet_w18_small", num_classes=5).eval()
    base = visattn.create_model("seg_hrnet_w18_small", num_classes=5)
    blocks = sum(type(m).__name__ == "BasicBlock" for m in base.modules())
    assert n_psa(model) == blocks > 0
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64, 64)
    assert model.pretrained_cfg["input_size"] == (3, 512, 1024)


def test_resnet_heads_match_torchvision_parameter_counts():
    # torchvision's fcn_resnet50 / deeplabv3_resnet50 (no auxiliary head, 21 classes): same architecture
    assert count_parameters(visattn.create_model("fcn_resnet50")) == 32_957_013
    assert count_parameters(visattn.create_model("deeplabv3_resnet50")) == 39_638_869


class Pointwise(nn.Module):
    """A 1×1 convolution: any tiling gives the same logits, so sliding must equal whole-image inference."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize(("window", "stride"), [((16, 16), (8, 8)), ((20, 48), (7, 30)), ((64, 64), None)])
def test_sliding_window_equals_whole_for_a_pointwise_model(window, stride):
    torch.manual_seed(0)
    model = Pointwise().eval()
    x = torch.randn(2, 3, 37, 50)
    whole = seg.segment(model, x, "whole")
    slide = seg.segment(model, x, "slide", window, stride)
    assert slide.shape == (2, 4, 37, 50)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=0)
    flipped = seg.segment(model, x, "slide", window, stride, flip=True)
    torch.testing.assert_close(flipped, whole, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="window"):
        seg.segment(model, x, "slide")


def test_sliding_window_visits_every_pixel():
    calls = []

    def model(x):
        calls.append(tuple(x.shape[-2:]))
        return torch.ones(x.shape[0], 2, *x.shape[-2:])

    out = seg.segment(model, torch.zeros(1, 3, 30, 45), "slide", (16, 16), (10, 10))
    assert out.shape == (1, 2, 30, 45) and torch.equal(out, torch.ones_like(out))
    assert set(calls) == {(16, 16)} and len(calls) == 3 * 4  # rows at y 0, 10, 14; columns at x 0, 10, 20, 29
