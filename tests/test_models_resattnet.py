"""Tests for visattn.models.resattnet (Residual Attention Network, Wang et al., CVPR 2017).

Reference counts (conv + FC MACs with ``count_macs(..., convention="macs")``; CIFAR with 10 classes):

==================  ==========  =========  =====================================
model               params      MACs       paper (via a note)
==================  ==========  =========  =====================================
resattnet56         31,810,728  6.2708 G   31.9 M, 6.2 G   (224 px)
resattnet92         52,466,344  10.5338 G  51.3 M, 10.4 G  (224 px)
resattnet92_cifar   1,825,690   0.2211 G   1.9 M           (32 px; reconstructed)
resattnet236_cifar  4,801,178   0.5958 G   5.1 M
resattnet452_cifar  9,361,562   1.0838 G   8.6 M
==================  ==========  =========  =====================================

The ImageNet counts are the deploy prototxts' (spec §2); the paper's figures are documentation only.
The CIFAR counts are this library's reference for its reconstruction (see the model module docstring).
"""

from __future__ import annotations

import pytest
import timm
import torch
from model_contract import check_classifier_contract
from torch import nn

import visattn
import visattn.models.resattnet  # noqa: F401  (registers the entrypoints)
from visattn import record_attention
from visattn.layers.residual_attention import AttentionModule, PreActBottleneck
from visattn.models import count_macs, count_parameters
from visattn.models.resattnet import ResidualAttentionNet

STAGE_SHAPES_224 = [(256, 56, 56), (512, 28, 28), (1024, 14, 14)]


def _count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


def _trunk_depth(model: ResidualAttentionNet) -> int:
    """Weighted layers on the trunk path: stem conv + 3 per unit outside the mask branches + FC."""
    units = 0
    for stage in model.stages:
        for block in stage:
            if isinstance(block, AttentionModule):
                units += len(block.pre) + len(block.trunk) + len(block.post)
            else:
                assert isinstance(block, PreActBottleneck)
                units += 1
    return 1 + 3 * units + 1


def _mask_shapes(maps: dict) -> list[tuple[int, ...]]:
    return sorted(tuple(m["mask"].shape[1:]) for m in maps.values())


# --- ImageNet Attention-56 / -92 (spec §2) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "convs", "bns", "pools", "modules"),
    [
        ("resattnet56", 31_810_728, 110, 107, 7, (1, 1, 1)),
        ("resattnet92", 52_466_344, 179, 176, 11, (1, 2, 3)),
    ],
)
def test_imagenet_parameter_and_layer_counts(name, params, convs, bns, pools, modules) -> None:
    model = visattn.create_model(name)
    assert count_parameters(model) == params
    assert _count(model, nn.Conv2d) == convs and _count(model, nn.BatchNorm2d) == bns
    assert _count(model, nn.MaxPool2d) == pools  # + the global average pool = the prototxt's 8 / 12
    assert [sum(isinstance(b, AttentionModule) for b in s) for s in model.stages] == [*modules, 0]
    assert [m.num_pools for m in model.attention_modules()] == [3] * modules[0] + [2] * modules[1] + [
        1
    ] * modules[2]
    assert _trunk_depth(model) == int(name.removeprefix("resattnet"))
    assert model.num_classes == 1000 and model.get_classifier().out_features == 1000
    assert model.get_classifier().bias is not None


@pytest.mark.parametrize(
    ("name", "gmacs", "modules"), [("resattnet56", 6.2708, (1, 1, 1)), ("resattnet92", 10.5338, (1, 2, 3))]
)
def test_imagenet_macs_and_masks_at_224(name: str, gmacs: float, modules) -> None:
    """One batch-1 no-grad forward (inside count_macs) also yields one mask per module (spec §8)."""
    model = visattn.create_model(name)
    with record_attention(model) as maps:
        macs = count_macs(model, (3, 224, 224), convention="macs")
    assert macs / 1e9 == pytest.approx(gmacs, abs=1e-3)
    assert len(maps) == len(model.attention_modules()) == sum(modules)
    expected = sum(([shape] * n for shape, n in zip(STAGE_SHAPES_224, modules, strict=True)), [])
    assert _mask_shapes(maps) == sorted(expected)


def test_resattnet56_runs_at_224_and_320() -> None:
    torch.manual_seed(0)
    model = visattn.create_model("resattnet56").eval()
    for size in (224, 320):
        with torch.no_grad(), record_attention(model) as maps:
            out = model(torch.randn(1, 3, size, size))
        assert out.shape == (1, 1000) and torch.isfinite(out).all()
        trunk = [(size + 3) // 4, (size + 7) // 8, (size + 15) // 16]  # 56/28/14 and 80/40/20
        assert _mask_shapes(maps) == sorted(
            (c, s, s) for (c, _, _), s in zip(STAGE_SHAPES_224, trunk, strict=True)
        )


# --- CIFAR variants (spec §3) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "gmacs", "modules", "ptr"),
    [
        ("resattnet92_cifar", 1_825_690, 0.221105, (2, 2, 2), (1, 2, 1)),
        ("resattnet236_cifar", 4_801_178, 0.595839, (6, 6, 6), (1, 2, 1)),
        ("resattnet452_cifar", 9_361_562, 1.083821, (6, 6, 6), (2, 4, 3)),
    ],
)
def test_cifar_counts_and_structure(name: str, params: int, gmacs: float, modules, ptr) -> None:
    model = visattn.create_model(name)
    assert count_parameters(model) == params  # the library's reference for the reconstruction
    if name == "resattnet92_cifar":
        assert 1.5e6 <= params <= 2.5e6  # paper: 1.9 M
    assert _trunk_depth(model) == int(name.removeprefix("resattnet").removesuffix("_cifar"))
    assert [sum(isinstance(b, AttentionModule) for b in s) for s in model.stages] == list(modules)
    mods = model.attention_modules()
    assert [m.num_pools for m in mods] == [2] * modules[0] + [1] * modules[1] + [0] * modules[2]
    assert all((len(m.pre), len(m.trunk), len(m.post)) == (ptr[0], ptr[1], ptr[0]) for m in mods)
    assert len(mods[0].down[-1]) == 1 + 2 * ptr[2]  # max-pool + 2r units at the deepest level
    assert model.num_classes == 10 and model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert model.pretrained_cfg["mean"] == pytest.approx((0.4914, 0.4822, 0.4465))
    assert count_macs(model, (3, 32, 32)) / 1e9 == pytest.approx(gmacs, abs=1e-6)


def test_cifar_masks_and_features() -> None:
    model = visattn.create_model("resattnet92_cifar", num_classes=100).eval()
    assert [(d["num_chs"], d["reduction"]) for d in model.feature_info] == [(64, 1), (128, 2), (256, 4)]
    with torch.no_grad(), record_attention(model) as maps:
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert _mask_shapes(maps) == sorted([(64, 32, 32)] * 2 + [(128, 16, 16)] * 2 + [(256, 8, 8)] * 2)
    assert set(maps) == {f"stages.{i}.{j}" for i, n in enumerate((2, 2, 2)) for j in range(1, n + 1)}


def test_features_only_levels() -> None:
    backbone = visattn.create_model("resattnet56", features_only=True).eval()
    assert backbone.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert backbone.feature_info.reduction() == [2, 4, 8, 16, 32]
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in maps] == [
        (64, 32, 32),
        (256, 16, 16),
        (512, 8, 8),
        (1024, 4, 4),
        (2048, 2, 2),
    ]
    picked = visattn.create_model("resattnet92_cifar", features_only=True, out_indices=(1, 2))
    assert picked.feature_info.channels() == [128, 256] and picked.feature_info.reduction() == [2, 4]


# --- timm interface ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "img_size"),
    [
        ("resattnet56", 64),
        ("resattnet92_cifar", 32),
        pytest.param("resattnet92", 64, marks=pytest.mark.slow),
        pytest.param("resattnet236_cifar", 32, marks=pytest.mark.slow),
        pytest.param("resattnet452_cifar", 32, marks=pytest.mark.slow),
    ],
)
def test_classifier_contract(name: str, img_size: int, tmp_path) -> None:
    check_classifier_contract(name, tmp_path, img_size=img_size)


def test_options_reach_every_attention_module() -> None:
    torch.manual_seed(0)
    arl = visattn.create_model("resattnet92_cifar", mask_activation="spatial", align_corners=False).eval()
    nal = visattn.create_model(
        "resattnet92_cifar", mask_activation="spatial", align_corners=False, learning="naive"
    )
    nal.load_state_dict(arl.state_dict())
    nal.eval()
    for model, learning in ((arl, "residual"), (nal, "naive")):
        mods = model.attention_modules()
        assert len(mods) == 6
        assert all(
            m.mask_activation == "spatial" and m.learning == learning and not m.align_corners for m in mods
        )
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(arl(x), nal(x))
    custom = visattn.create_model(
        "resattnet56", modules_per_stage=(0, 1, 2), num_pools=(2, 2, 0), p=0, t=1, r=2
    )
    mods = custom.attention_modules()
    assert [m.num_pools for m in mods] == [2, 0, 0]
    assert all((len(m.pre), len(m.trunk), len(m.post)) == (0, 1, 0) for m in mods)
    assert [_count(m.down[-1], PreActBottleneck) for m in mods] == [4, 4, 4]  # 2r at the deepest level


def test_in_chans_drop_rate_and_defaults() -> None:
    model = visattn.create_model("resattnet92_cifar", in_chans=1, drop_rate=0.3)
    assert model.stem.conv.in_channels == 1 and model.head.drop.p == 0.3
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    cfg = timm.models.get_pretrained_cfg("resattnet92").to_dict()
    assert cfg["test_input_size"] == (3, 320, 320) and cfg["classifier"] == "head.fc"
    assert not cfg.get("url") and not cfg.get("hf_hub_id")  # visattn never downloads


def test_grad_checkpointing_matches() -> None:
    torch.manual_seed(0)
    model = visattn.create_model("resattnet92_cifar").train()
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(model(x), ref)


def test_fx_trace_matches_eager() -> None:
    torch.manual_seed(0)
    model = visattn.create_model("resattnet92_cifar").eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


@pytest.mark.slow
def test_compile_matches_eager() -> None:
    """aot_eager decomposes BN/interpolation; float64 keeps the deep untrained net's rounding small."""
    torch.manual_seed(0)
    model = visattn.create_model("resattnet92_cifar").eval().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="aot_eager")(x), model(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layout": "tiny"}, "layout must be one of"),
        ({"modules_per_stage": (1, 1)}, "modules_per_stage must be 3 ints >= 0"),
        ({"modules_per_stage": (1, -1, 1)}, "modules_per_stage must be 3 ints >= 0"),
        ({"num_pools": (3, 2, 1.0)}, "num_pools must be 3 ints >= 0"),
        ({"learning": "gated"}, "learning must be one of"),
        ({"mask_activation": "softmax"}, "mask_activation must be one of"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResidualAttentionNet(**{"layout": "cifar", **kwargs})
