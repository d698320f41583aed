"""Pose networks (SimpleBaseline, HRNet, glyph variants) with and without PSA."""

import pytest
import torch

import visattn
from visattn.layers.polarized import PolarizedSelfAttention
from visattn.models import count_parameters
from visattn.models import pose as _pose  # noqa: F401 - registers the pose models


def n_psa(model):
    return sum(isinstance(m, PolarizedSelfAttention) for m in model.modules())


def test_glyph_pose_models():
    torch.manual_seed(0)
    for name, expected in (("pose_glyphnet", 0), ("psa_pose_glyphnet", 3)):
        model = visattn.create_model(name)
        out = model(torch.randn(2, 1, 32, 32))
        assert out.shape == (2, 5, 16, 16) and n_psa(model) == expected
        out.square().mean().backward()
        assert all(p.grad is not None for p in model.parameters())
    assert visattn.create_model("pose_glyphnet", num_classes=3, num_deconv=3)(
        torch.randn(1, 1, 32, 32)
    ).shape == (1, 3, 32, 32)


def test_hrnet_pose_uses_the_stride4_branch_and_every_parameter():
    model = visattn.create_model("psa_pose_hrnet_w18_small", num_classes=17, psa_layout="sequential")
    out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 17, 16, 16)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())  # no unused fuse layers (DDP-safe)
    assert n_psa(model) == sum(type(m).__name__ == "BasicBlock" for m in model.modules())


def test_published_parameter_counts():
    # SimpleBaseline-R50 34.0 M and HRNet-W32 28.5 M (256×192, 17 keypoints)
    assert count_parameters(visattn.create_model("simplebaseline_resnet50")) == 33_999_697
    assert count_parameters(visattn.create_model("pose_hrnet_w32")) == 28_536_113


@pytest.mark.slow
def test_hrnet_w48_with_and_without_psa():
    # HRNet-W48 63.6 M; PSA in its 104 BasicBlocks adds 2C² + 3C each (paper variant): +6,384,384
    base = count_parameters(visattn.create_model("pose_hrnet_w48"))
    assert base == 63_595_745
    assert count_parameters(visattn.create_model("psa_pose_hrnet_w48")) - base == 6_384_384
    model = visattn.create_model("psa_simplebaseline_resnet50").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 192)).shape == (1, 17, 64, 48)
