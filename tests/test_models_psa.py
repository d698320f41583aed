"""Tests for visattn.models.psa and visattn.models.insert (spec /work/shared/specs/psa.md §5)."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torchvision
from model_contract import check_classifier_contract
from torch import nn

import visattn
import visattn.models.psa  # noqa: F401  (registers the psa_* entrypoints)
from visattn import record_attention
from visattn.layers import PolarizedSelfAttention
from visattn.models import count_parameters, save_weights
from visattn.models.insert import (
    ATTENTION_KINDS,
    AttentionAfter,
    AttentionBefore,
    insert_attention,
    register_attention_kind,
)

IMG = 64


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


def _psas(model: nn.Module) -> list[tuple[str, PolarizedSelfAttention]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PolarizedSelfAttention)]


def _blocks(model: nn.Module, kind: str) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if type(m).__name__ == kind]


def _zero_psa(model: nn.Module) -> None:
    """All PSA convs to zero, LayerNorm affine at its default (1, 0): paper parallel PSA is then the identity."""
    for _, psa in _psas(model):
        for m in psa.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.zeros_(m.weight)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()


# ---------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize(
    "name",
    ["psa_resnet18", "psa_resnet50", "psa_hrnet_w18_small"]
    + [
        pytest.param(n, marks=pytest.mark.slow)
        for n in ("psa_resnet34", "psa_resnet101", "psa_hrnet_w18", "psa_hrnet_w32", "psa_hrnet_w48")
    ],
)
def test_classifier_contract(name, tmp_path):
    check_classifier_contract(name, tmp_path, img_size=IMG)


def test_registered_names():
    expected = {f"psa_{b}" for b in ("resnet18", "resnet34", "resnet50", "resnet101")}
    expected |= {f"psa_hrnet_{w}" for w in ("w18_small", "w18", "w32", "w48")}
    assert expected <= set(visattn.list_models("psa_*"))
    for name in expected:
        cfg = timm.models.get_pretrained_cfg(name)
        assert not cfg.url and not cfg.hf_hub_id and cfg.num_classes == 1000
        assert cfg.first_conv == "conv1" and cfg.classifier in ("fc", "classifier")


# ------------------------------------------------------------------------------------ parameter overhead

# Spec §5: HRNet-W48 BasicBlocks — stage 2: 1 module × 2 branches × 4 blocks; stage 3: 4 × 3 × 4; stage 4:
# 3 × 4 × 4 — with branch widths 48·2^i.
_W48_LAYOUT = {2: (1, 2, 4), 3: (4, 3, 4), 4: (3, 4, 4)}
_W48_WIDTHS = [c for _, (mods, branches, blocks) in _W48_LAYOUT.items() for c in [48 * 2**i for i in range(branches)] * mods * blocks]  # fmt: skip


def _official_seq_params(c: int) -> int:
    c2 = c // 2
    r = c2 // 4
    return c + c * c2 + (c2 * r + r) + 2 * r + (r * c + c) + 2 * c * c2


def test_hrnet_w48_overhead_matches_spec(monkeypatch):
    # Parameter counting only: meta tensors and no-op random initialisation keep this cheap.
    for fn in ("kaiming_normal_", "kaiming_uniform_", "normal_", "uniform_"):
        monkeypatch.setattr(nn.init, fn, lambda tensor, *args, **kwargs: tensor)
    with torch.device("meta"):
        _check_w48_overhead()


def _check_w48_overhead():
    assert len(_W48_WIDTHS) == 104
    assert sum(c * c for c in _W48_WIDTHS) == 3_170_304
    sum_c = sum(_W48_WIDTHS)
    assert sum_c == 14_592

    base = timm.create_model("hrnet_w48")
    n_base = count_parameters(base)
    basic = _blocks(base, "BasicBlock")
    # timm's hrnet_w48 has exactly the spec's BasicBlocks (fuse and transition layers are plain convs)
    assert len(basic) == 104
    assert sorted(b.conv1.out_channels for _, b in basic) == sorted(_W48_WIDTHS)

    # official PSA_p: no bias, no LN -> 2C² + C per block
    insert_attention(base, "psa", layout="parallel", variant="official")
    assert len(_psas(base)) == 104
    assert count_parameters(base) - n_base == 2 * 3_170_304 + sum_c == 6_355_200

    # paper variant (either layout): 2C² + 3C (LN affine adds 2C); official PSA_s: see _official_seq_params
    for kwargs, expected in [
        (dict(psa_variant="paper"), 2 * 3_170_304 + 3 * sum_c),
        (dict(psa_variant="official", psa_layout="sequential"), sum(map(_official_seq_params, _W48_WIDTHS))),
    ]:
        model = visattn.create_model("psa_hrnet_w48", **kwargs)
        assert len(_psas(model)) == 104
        assert count_parameters(model) - n_base == expected
    assert expected == 5_384_544  # ≈ 1.70 ΣC² (spec: ≈ 1.69 ΣC² ≈ 5.35 M)


def test_hrnet_stage1_option_and_head_excluded():
    plain = _psas(visattn.create_model("psa_hrnet_w18_small"))
    assert all(".branches." in n for n, _ in plain)
    with_stage1 = visattn.create_model("psa_hrnet_w18_small", psa_stage1=True, position="after_conv1")
    names = [n for n, _ in _psas(with_stage1)]
    stage1 = [n for n in names if n.startswith("layer1.")]
    assert stage1 == ["layer1.0.act1.attn"]  # hrnet_w18_small: one stage-1 Bottleneck, width 32
    assert len(names) == len(plain) + 1
    assert not any("incre_modules" in n for n in names)
    assert with_stage1.layer1[0].act1.attn.channel.channels == 32


# ------------------------------------------------------------------------------------------ insertion


@pytest.mark.parametrize("source", ["timm", "torchvision"])
@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_insert_zero_weight_psa_is_identity(source, arch):
    torch.manual_seed(0)
    if source == "timm":
        model = timm.create_model(arch, num_classes=5)
    else:
        model = getattr(torchvision.models, arch)(num_classes=5)
    for m in model.modules():  # timm zero-inits the last BN of each block, which would hide the residual path
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.eval()
    original = copy.deepcopy(model)
    n_blocks = len(_blocks(model, "BasicBlock" if arch == "resnet18" else "Bottleneck"))
    assert insert_attention(model) is model
    assert len(_psas(model)) == n_blocks == (8 if arch == "resnet18" else 16)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 5)
        assert not torch.equal(out, original(x))  # random PSA weights change the output
        _zero_psa(model)
        torch.testing.assert_close(model(x), original(x), rtol=0, atol=0)


def test_insert_wiring_names():
    tm = insert_attention(timm.create_model("resnet50"))
    assert isinstance(tm.layer1[0].act2, AttentionAfter) and isinstance(tm.layer1[0].act2.module, nn.ReLU)
    tv = insert_attention(torchvision.models.resnet50())
    assert isinstance(tv.layer1[0].conv3, AttentionBefore)
    assert isinstance(tv.layer1[0].conv3.module, nn.Conv2d)
    tv18 = insert_attention(torchvision.models.resnet18(), position="after_conv1")
    assert isinstance(tv18.layer4[1].conv2, AttentionBefore)
    # timm keys are unchanged (only additions); torchvision's wrapped conv moves under ``.module``
    base_keys = set(timm.create_model("resnet50").state_dict())
    assert base_keys <= set(tm.state_dict())
    assert "layer1.0.conv3.module.weight" in tv.state_dict()


@pytest.mark.parametrize("position", ["after_conv1", "after_conv2"])
def test_bottleneck_position(position):
    model = visattn.create_model("psa_resnet50", position=position, num_classes=3).eval()
    seen = {}
    for name, psa in _psas(model):
        psa.register_forward_pre_hook(lambda m, inp, name=name: seen.__setitem__(name, tuple(inp[0].shape)))
    with torch.no_grad():
        model(torch.randn(1, 3, IMG, IMG))
    act = "act1" if position == "after_conv1" else "act2"
    expected_names = [f"layer{i + 1}.{j}.{act}.attn" for i, n in enumerate((3, 4, 6, 3)) for j in range(n)]
    assert sorted(seen) == sorted(expected_names)
    for stage, width, out_size in [(1, 64, 16), (2, 128, 8), (3, 256, 4), (4, 512, 2)]:
        block = getattr(model, f"layer{stage}")[0]
        assert block.conv2.in_channels == block.conv2.out_channels == width
        in_size = out_size if stage == 1 else out_size * 2  # the stride sits on the 3×3 conv
        expected = in_size if position == "after_conv1" else out_size
        assert seen[f"layer{stage}.0.{act}.attn"] == (1, width, expected, expected)


def test_insert_errors():
    with pytest.raises(ValueError, match="no eligible"):
        insert_attention(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    with pytest.raises(ValueError, match="no eligible"):
        insert_attention(timm.create_model("resnet18"), block_types=("bottleneck",))
    with pytest.raises(ValueError, match="Bottlenecks"):
        insert_attention(timm.create_model("resnet18"), position="after_conv2")
    with pytest.raises(ValueError, match="position"):
        insert_attention(timm.create_model("resnet18"), position="after_conv3")
    with pytest.raises(ValueError, match="kind"):
        insert_attention(timm.create_model("resnet18"), kind="se")
    with pytest.raises(ValueError, match="block_types"):
        insert_attention(timm.create_model("resnet18"), block_types="basic")
    model = insert_attention(timm.create_model("resnet18"))
    with pytest.raises(ValueError, match="already"):
        insert_attention(model)
    with pytest.raises(ValueError, match="layout"):
        visattn.create_model("psa_resnet18", psa_layout="serial")


def test_attention_kind_registry(monkeypatch):
    made = []

    def factory(channels, scale=1.0):
        made.append((channels, scale))
        return nn.Identity()

    monkeypatch.setitem(ATTENTION_KINDS, "identity_test", factory)
    with pytest.raises(ValueError, match="already registered"):
        register_attention_kind("identity_test", factory)
    insert_attention(torchvision.models.resnet18(), kind="identity_test", scale=2.0)
    assert made == [(c, 2.0) for c in (64, 64, 128, 128, 256, 256, 512, 512)]


# ------------------------------------------------------------------------------------ models in use


def test_record_attention_every_block():
    model = visattn.create_model("psa_resnet18", psa_layout="sequential", psa_variant="official").eval()
    with torch.no_grad(), record_attention(model) as maps:
        model(torch.randn(2, 3, IMG, IMG))
    expected = {}
    for stage, (chs, size) in enumerate([(64, 16), (128, 8), (256, 4), (512, 2)], start=1):
        for j in range(2):
            expected[f"layer{stage}.{j}.act1.attn.channel"] = ("channel", (2, chs, 1, 1))
            expected[f"layer{stage}.{j}.act1.attn.spatial"] = ("spatial", (2, 1, size, size))
    assert set(maps) == set(expected)
    for name, (kind, shape) in expected.items():
        assert set(maps[name]) == {kind} and maps[name][kind].shape == shape


@pytest.mark.parametrize("name", ["psa_resnet18", "psa_hrnet_w18_small"])
def test_features_only_has_psa(name):
    classifier = visattn.create_model(name)
    backbone = visattn.create_model(name, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert len(_psas(backbone)) == len(_psas(classifier)) > 0
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, IMG, IMG))
    assert [f.shape[1] for f in maps] == backbone.feature_info.channels()
    assert [f.shape[-1] for f in maps] == [IMG // r for r in backbone.feature_info.reduction()]


def test_hrnet_features_only_generic_feature_cls():
    backbone = visattn.create_model("psa_hrnet_w18_small", features_only=True, feature_cls="getter").eval()
    assert len(_psas(backbone)) == len(_psas(visattn.create_model("psa_hrnet_w18_small")))


def test_pretrained_file_loads_base_weights_before_insertion(tmp_path):
    torch.manual_seed(0)
    base = timm.create_model("resnet18")  # 1000 classes as in the cfg, so timm keeps the classifier too
    path = tmp_path / "resnet18.safetensors"
    save_weights(base, path)
    model = visattn.create_model("psa_resnet18", pretrained=True, pretrained_file=path)
    state = model.state_dict()
    for key, value in base.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    assert len(_psas(model)) == 8


def test_fx_trace_matches_eager():
    model = visattn.create_model("psa_resnet18", num_classes=3).eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)
