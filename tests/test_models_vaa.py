"""VAA networks (spec /work/shared/specs/vaa.md §1, §6, §7): taps, fusion, sizes, parameter counts, timm contract."""

from __future__ import annotations

import functools

import pytest
import timm
import torch
from model_contract import check_classifier_contract
from safetensors.torch import save_file

import visattn
import visattn.models.vaa  # noqa: F401  (registers the VAA entrypoints)
from visattn import record_attention
from visattn.models import count_parameters, save_weights
from visattn.models.vaa import VAANet

# Small branches on resnet18 at 64 px (grids 4×4 at layer3, 2×2 at layer4).
SMALL = dict(att_channels=(16, 16), sr_channels=(16, 16, 32))
AT64 = dict(pretrained_cfg_overlay=dict(input_size=(3, 64, 64)))  # fixed_input_size: img_size from the cfg
RESNET101_NO_FC = 42_500_160


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small(layout="paper", num_classes=5, **kwargs) -> VAANet:
    torch.manual_seed(0)
    kwargs = {"backbone": "resnet18", "img_size": 64, **SMALL, **kwargs}
    return visattn.create_model("vaa", num_classes=num_classes, layout=layout, **kwargs).eval()


@functools.cache
def on_meta(name: str, layout: str = "paper") -> VAANet:
    """Full-size model on the meta device: parameter counts and shapes without memory or compute."""
    with torch.device("meta"):
        return visattn.create_model(name, layout=layout).eval()


# --- hand counts of the branch (spec §1.2 / §1.3; every conv has a bias) ---
def conv(cin, cout, k=1):
    return cin * cout * k * k + cout


def bn(ch):
    return 2 * ch


def branch_params(layout: str, D: int, C: int, k: int) -> int:
    (a1, a2), ka, (s1, s2, s3) = {
        "paper": ((256, 256), 1, (256, 512, 512)),
        "released": ((512, 512), 3, (256, 512, 1024)),
    }[layout]
    f_att = conv(D, a1) + bn(a1) + conv(a1, a2, ka) + bn(a2) + conv(a2, C)
    f_sr = conv(C, s1) + bn(s1) + conv(s1, s2) + bn(s2) + conv(s2, s3, k) + bn(s3) + s3 * C + C
    return f_att + conv(D, C) + f_sr


@pytest.mark.parametrize("layout", ["paper", "released"])
def test_classifier_contract(layout, tmp_path):
    check_classifier_contract("vaa", tmp_path, 64, backbone="resnet18", layout=layout, **SMALL, **AT64)


def test_published_branch_formula():
    assert branch_params("released", 1024, 14, 14) == 105_823_018  # the stage-3 released branch


@pytest.mark.parametrize("layout", ["paper", "released"])
def test_resnet101_parameter_count(layout):
    model = on_meta("vaa_resnet101", layout)
    assert model.num_classes == 14 and model.feature_sizes == (
        ((14, 14), (7, 7)) if layout == "paper" else ((14, 14), (14, 14), (7, 7))
    )
    expected = RESNET101_NO_FC + conv(2048, 14) + branch_params(layout, 2048, 14, 7)
    expected += branch_params(layout, 1024, 14, 14) * (1 if layout == "paper" else 2)
    assert count_parameters(model.backbone) == RESNET101_NO_FC
    assert count_parameters(model) == expected
    assert expected == {"paper": 108_016_290, "released": 283_466_188}[layout]


@pytest.mark.parametrize(
    "layout, taps", [("paper", ("layer3", "layer4")), ("released", ("layer3.19", "layer3.22", "layer4.2"))]
)
def test_resnet101_taps_are_the_spec_modules(layout, taps):
    model = on_meta("vaa_resnet101", layout)
    assert model.taps == taps
    seen = []
    handles = [
        model.backbone.get_submodule(t).register_forward_hook(lambda m, i, o: seen.append(o)) for t in taps
    ]
    with torch.no_grad():
        features = model.forward_features(torch.empty(1, 3, 224, 224, device="meta"))
        logits = model.forward_head(features)
    for h in handles:
        h.remove()
    assert len(features) == len(seen) == len(taps) and all(
        f is s for f, s in zip(features, seen, strict=True)
    )
    assert [tuple(f.shape[1:]) for f in features] == [
        (c, *s) for c, s in zip(model.tap_channels, model.feature_sizes, strict=True)
    ]
    assert logits.shape == (1, 14)


def test_released_default_taps_other_backbones():
    assert on_meta("vaa_resnet50", "released").taps == ("layer3.4", "layer3.5", "layer4.2")
    assert small("released").taps == ("layer3.0", "layer3.1", "layer4.1")


def test_default_cfg():
    cfg = on_meta("vaa_resnet101", "paper").pretrained_cfg
    assert cfg == timm.models.get_pretrained_cfg("vaa_resnet101").to_dict()
    assert cfg["num_classes"] == 14 and cfg["input_size"] == (3, 224, 224)
    assert cfg["mean"] == timm.data.IMAGENET_DEFAULT_MEAN and cfg["std"] == timm.data.IMAGENET_DEFAULT_STD
    assert "url" not in cfg or not cfg["url"]
    assert not cfg.get("hf_hub_id")


@pytest.mark.parametrize("layout, n_branches", [("paper", 2), ("released", 3)])
def test_fusion_is_mean_of_branch_logits(layout, n_branches):
    model = small(layout)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        out = model.forward_branches(x)
        logits = model(x)
    assert out["primary"].shape == (3, 5) and len(out["attention"]) == n_branches
    assert all(a.shape == (3, 5) for a in out["attention"])
    mean = (out["primary"] + sum(out["attention"])) / (1 + n_branches)
    torch.testing.assert_close(out["fused"], mean)
    torch.testing.assert_close(logits, out["fused"])


def test_last_tap_is_backbone_final_map():
    model = small("released")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x)[-1], model.backbone.forward_features(x))


@pytest.mark.parametrize("layout", ["paper", "released"])
def test_record_attention_every_branch(layout):
    model = small(layout)
    with record_attention(model) as maps, torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    assert sorted(maps) == [f"branches.{i}" for i in range(len(model.taps))]
    for i, size in enumerate(model.feature_sizes):
        mask, conf = maps[f"branches.{i}"]["mask"], maps[f"branches.{i}"]["confidence"]
        assert mask.shape == conf.shape == (2, 5, *size)
        torch.testing.assert_close(mask.sum((-2, -1)), torch.ones(2, 5))


def test_input_size_is_fixed_unless_adaptive():
    model = small()
    with pytest.raises(ValueError, match="feature_size"):
        model(torch.randn(1, 3, 96, 96))
    adaptive = small(sr_pool="adaptive")
    assert adaptive.feature_sizes == ((4, 4), (2, 2))
    assert adaptive(torch.randn(1, 3, 96, 96)).shape == (1, 5)
    assert small(img_size=96).feature_sizes == ((6, 6), (3, 3))


def test_custom_taps_and_errors():
    model = small(taps=("layer2", "layer3.1", "layer4"))
    assert model.feature_sizes == ((8, 8), (4, 4), (2, 2)) and model.tap_channels == (128, 256, 512)
    assert len(model.forward_branches(torch.randn(1, 3, 64, 64))["attention"]) == 3
    for taps, match in [
        (("layer3", "layer9"), "not a module"),
        (("layer2", "layer3"), "final stage"),
        (("layer4", "layer3"), "forward order"),
        (("layer3.0.conv1", "layer4"), "nn.Sequential"),
    ]:
        with pytest.raises(ValueError, match=match):
            small(taps=taps)
    with pytest.raises(ValueError, match="backbone="):
        visattn.create_model("vaa")
    with pytest.raises(ValueError, match="fixes backbone"):
        visattn.create_model("vaa_resnet101", backbone="resnet50")
    with pytest.raises(ValueError, match="layout"):
        small("official")


def test_reset_classifier_rebuilds_branches():
    model = small("released")
    model.reset_classifier(9)
    out = model.forward_branches(torch.randn(2, 3, 64, 64))
    assert model.fc.out_features == 9 and all(a.shape == (2, 9) for a in out["attention"])
    model.reset_classifier(0)
    assert len(model.branches) == 0
    with pytest.raises(ValueError, match="num_classes=0"):
        model.forward_branches(torch.randn(1, 3, 64, 64))


def test_fx_matches_eager():
    model = small("released")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))


@pytest.mark.slow  # ~10 s of compilation on 2 cores
def test_compile_matches_eager():
    model = small("released")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="aot_eager", fullgraph=True)(x), model(x))


def test_grad_checkpointing_matches():
    model = small().train()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    ref = model(x)
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    torch.testing.assert_close(model(x), ref)


def test_pretrained_backbone(tmp_path):
    source = timm.create_model("resnet18")  # ImageNet-style checkpoint, 1000-class fc included
    path = tmp_path / "resnet18.safetensors"
    save_file(source.state_dict(), str(path))
    model = small(pretrained_backbone=path)  # the key CSRA uses too
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    with pytest.raises(FileNotFoundError):
        small(pretrained_backbone=tmp_path / "missing.pth")
    with pytest.warns(DeprecationWarning, match="pretrained_backbone"):  # the former name still works
        old = small(backbone_pretrained_file=path)
    torch.testing.assert_close(old.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_full_checkpoint_with_other_class_count(tmp_path):
    model = small("released", num_classes=14)
    path = tmp_path / "vaa.safetensors"
    save_weights(model, path)
    other = visattn.create_model(
        "vaa",
        pretrained=True,
        pretrained_file=path,
        num_classes=3,
        backbone="resnet18",
        img_size=64,
        layout="released",
        **SMALL,
    )
    assert other.fc.out_features == 3
    torch.testing.assert_close(other.backbone.conv1.weight, model.backbone.conv1.weight)
    torch.testing.assert_close(other.branches[2].f_att[0].weight, model.branches[2].f_att[0].weight)


def test_other_timm_backbone():
    model = small("released", backbone="efficientnet_b0")
    assert model.taps == ("blocks.4.1", "blocks.4.2", "blocks.6.0")
    assert model.feature_sizes == ((4, 4), (4, 4), (2, 2)) and model.num_features == 320
    out = model.forward_branches(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(out["fused"], (out["primary"] + sum(out["attention"])) / 4)
    with pytest.raises(ValueError, match="nn.Sequential"):
        small("released", backbone="convnext_atto")  # ConvNeXt stages are not nn.Sequential: pass taps=
