"""SAN10/15/19 networks: published parameter and FLOP counts, timm contract, input sizes, converter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from model_contract import check_classifier_contract

import visattn
import visattn.models.san  # noqa: F401  (registers the SAN entrypoints and the converter)
from visattn.models import count_macs, count_parameters
from visattn.models.convert import convert_checkpoint, convert_file, list_converters
from visattn.models.san import SAN, convert_san_official

# Spec §7 (exact) and §8 (SAN convention, README 2.2/1.9, 3.0/2.6, 3.8/3.3 G).
PUBLISHED = {
    "san10_pairwise": (10_531_848, 2.155),
    "san10_patchwise": (11_841_124, 1.865),
    "san15_pairwise": (14_065_436, 3.023),
    "san15_patchwise": (16_181_310, 2.583),
    "san19_pairwise": (17_596_156, 3.844),
    "san19_patchwise": (20_518_470, 3.259),
}
SMALL = dict(layers=[1, 1, 1, 1, 1], kernels=[3, 3, 3, 3, 3])  # reflect-valid from 64 px


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts(name):
    model = visattn.create_model(name)
    assert count_parameters(model) == PUBLISHED[name][0]
    assert model.num_classes == 1000 and model.pretrained_cfg["input_size"] == (3, 224, 224)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_flops_san_convention(name):
    model = visattn.create_model(name)
    macs = count_macs(model, (3, 224, 224), convention="san")
    assert abs(macs / 1e9 - PUBLISHED[name][1]) < 1e-3, macs


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_classifier_contract(sa_type, tmp_path):
    check_classifier_contract(f"san10_{sa_type}", tmp_path, img_size=64, **SMALL)


def test_structure_and_feature_info():
    model = visattn.create_model("san15_patchwise")
    assert [len(getattr(model, f"layer{s}")) for s in range(5)] == [3, 2, 3, 5, 2]
    assert model.kernels == (3, 7, 7, 7, 7)
    assert [d["reduction"] for d in model.feature_info] == [2, 4, 8, 16, 32]
    assert [d["num_chs"] for d in model.feature_info] == [64, 256, 512, 1024, 2048]
    assert model.get_classifier() is model.fc and model.fc.in_features == 2048
    assert model.conv_in.bias is None and all(getattr(model, f"conv{s}").bias is None for s in range(5))

    backbone = visattn.create_model("san10_pairwise", features_only=True, out_indices=(1, 3), **SMALL).eval()
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [(1, 256, 16, 24), (1, 1024, 4, 6)]
    assert (maps[0] >= 0).all()  # taken after each stage's BN-ReLU


def test_features_match_forward_features():
    torch.manual_seed(0)
    model = visattn.create_model("san10_patchwise", num_classes=5, **SMALL).eval()
    backbone = visattn.create_model("san10_patchwise", features_only=True, **SMALL).eval()
    backbone.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}, strict=True
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[-1], model.forward_features(x))


def test_minimum_input_size():
    model = SAN(layers=[1, 1, 1, 1, 1], num_classes=4).eval()  # default kernels (3, 7, 7, 7, 7), reflect
    assert model.min_input_size == 128
    with pytest.raises(ValueError, match="at least 128x128"):
        model(torch.randn(1, 3, 96, 128))
    with torch.no_grad():
        assert model(torch.randn(1, 3, 128, 136)).shape == (1, 4)
    assert SAN(**SMALL).min_input_size == 64
    zeros = SAN(layers=[1, 1, 1, 1, 1], padding_mode="zeros", num_classes=4).eval()
    assert zeros.min_input_size == 32
    with torch.no_grad():
        assert zeros(torch.randn(1, 3, 32, 48)).shape == (1, 4)
    with pytest.raises(ValueError, match="layers"):
        SAN(layers=[1, 1, 1])
    with pytest.raises(ValueError, match="sa_type"):
        SAN(sa_type="local")


@pytest.mark.parametrize(
    "sa_type, kwargs",
    [
        ("pairwise", dict(relation="dot")),
        ("pairwise", dict(relation="concatenation", position_encoding=False)),
        ("patchwise", dict(relation="star", share_planes=4)),
    ],
)
def test_relation_options(sa_type, kwargs):
    model = visattn.create_model(f"san10_{sa_type}", num_classes=3, **SMALL, **kwargs)
    block = model.layer1[0].attention
    assert block.relation == kwargs["relation"]
    assert block.share_planes == kwargs.get("share_planes", 8)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.sum().backward()
    with pytest.raises(ValueError, match="official"):
        model.official_state_dict()


def test_drop_rate_grad_checkpointing_and_global_pool():
    torch.manual_seed(0)
    model = visattn.create_model(
        "san10_pairwise", num_classes=3, drop_rate=0.5, global_pool="max", **SMALL
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), ref)
    model.reset_classifier(2)
    assert model.global_pool.pool_type == "max" and model(x).shape == (1, 2)


def _small_eager():
    torch.manual_seed(0)
    model = visattn.create_model("san10_pairwise", num_classes=3, **SMALL).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        return model, x, model(x)


def test_fx_matches_eager():
    model, x, ref = _small_eager()
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), ref)


@pytest.mark.slow  # ~7-15 s of compilation
def test_compile_matches_eager():
    model, x, ref = _small_eager()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="aot_eager")(x), ref)


# ---------------------------------------------------------------------- converter
def official_file(model: SAN) -> dict[str, torch.Tensor]:
    """The model's tensors in the layout of an official DDP checkpoint (after unwrapping 'state_dict')."""
    return model.official_state_dict(prefix="module.")


def _randomise(model: SAN) -> SAN:
    torch.manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "running_var" in name else torch.randn_like(t) * 0.2)
    return model.eval()


def official_forward(sd: dict[str, torch.Tensor], model: SAN, x: torch.Tensor) -> torch.Tensor:
    """hszhao/SAN ``SAN.forward`` written from the official keys (eval BN); blocks are the model's own,
    checked against the official SAM/Bottleneck in test_san_layers."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}

    def bn_relu(t, name):
        w, b, m, v = (sd[f"{name}.{p}"] for p in ("weight", "bias", "running_mean", "running_var"))
        return F.relu(F.batch_norm(t, m, v, w, b, training=False, eps=1e-5))

    x = bn_relu(F.conv2d(x, sd["conv_in.weight"]), "bn_in")
    for s in range(5):
        x = F.conv2d(F.max_pool2d(x, 2, 2), sd[f"conv{s}.weight"])
        for block in getattr(model, f"layer{s}"):
            x = block(x)
        x = bn_relu(x, f"bn{s}")
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("sa_type", ["pairwise", "patchwise"])
def test_converter_round_trip(sa_type):
    src = _randomise(SAN(sa_type=sa_type, num_classes=6, **SMALL))
    sd = official_file(src)
    assert all(k.startswith("module.") for k in sd)
    assert ("module.layer1.0.sam.conv_p.weight" in sd) == (sa_type == "pairwise")
    assert "module.layer2.0.sam.conv_w.5.bias" in sd and "module.bn_in.running_var" in sd

    with pytest.raises(ValueError, match="allow_custom"):
        convert_checkpoint("san-official", sd)
    options = dict(kernels=[3] * 5) if sa_type == "pairwise" else {}  # pairwise kernels are not in the shapes
    conv = convert_checkpoint("san-official", sd, allow_custom=True, **options)
    assert conv.model_name == f"san10_{sa_type}"
    assert conv.model_kwargs == {"num_classes": 6, "layers": [1] * 5, "kernels": [3] * 5}
    model = visattn.create_model(conv.model_name, **conv.model_kwargs).eval()
    model.load_state_dict(conv.state_dict, strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)
        torch.testing.assert_close(conv.build().eval()(x), src(x), rtol=0, atol=0)
        torch.testing.assert_close(official_forward(sd, src, x), src(x))


def test_convert_file_and_pretrained_file(tmp_path):
    src = _randomise(SAN(sa_type="patchwise", num_classes=6, **SMALL))
    official = tmp_path / "model_best.pth"  # the official training checkpoint wrapper
    torch.save({"epoch": 100, "state_dict": official_file(src), "top1_val": 0.5}, official)
    out = tmp_path / "san.safetensors"
    conv = convert_file("san-official", official, out, allow_custom=True)
    x = torch.randn(1, 3, 64, 64)
    model = visattn.create_model(conv.model_name, checkpoint_path=out, **conv.model_kwargs).eval()
    # pretrained_file with another classifier size: timm drops the 6-class fc.
    kwargs = {k: v for k, v in conv.model_kwargs.items() if k != "num_classes"}
    tuned = visattn.create_model(
        conv.model_name, pretrained=True, pretrained_file=out, num_classes=2, **kwargs
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x), rtol=0, atol=0)
        torch.testing.assert_close(tuned.eval().forward_features(x), src.forward_features(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["san10_pairwise", "san19_patchwise"])
def test_converter_names_published_models(name):
    src = visattn.create_model(name)
    conv = convert_san_official(official_file(src))
    assert conv.model_name == name and conv.model_kwargs == {"num_classes": 1000}
    fresh = visattn.create_model(name, **conv.model_kwargs)
    fresh.load_state_dict(conv.state_dict, strict=True)
    assert all(conv.state_dict[k].equal(v) for k, v in src.state_dict().items())
    # A checkpoint without BN counters (older PyTorch) converts too.
    no_counters = {k: v for k, v in official_file(src).items() if "num_batches_tracked" not in k}
    assert convert_san_official(no_counters).model_name == name


def test_converter_errors():
    assert "san-official" in list_converters()
    src = SAN(sa_type="patchwise", num_classes=6, **SMALL)
    sd = official_file(src)
    with pytest.raises(KeyError, match="fc.weight"):
        convert_san_official({k: v for k, v in sd.items() if not k.startswith("module.fc.")})
    with pytest.raises(KeyError, match="layer"):
        convert_san_official({k: v for k, v in sd.items() if ".layer" not in k})
    with pytest.raises(KeyError, match=r"block 'layer3\.0'.*missing \['sam\.conv1\.weight'\]"):
        convert_san_official(
            {k: v for k, v in sd.items() if k != "module.layer3.0.sam.conv1.weight"}, allow_custom=True
        )
    with pytest.raises(KeyError, match="extra.weight"):
        convert_san_official(sd | {"module.extra.weight": torch.zeros(1)}, allow_custom=True)
    with pytest.raises(KeyError, match="0..n-1"):
        convert_san_official(sd | {"module.layer2.2.bn1.weight": torch.zeros(512)}, allow_custom=True)
    with pytest.raises(ValueError, match="bn2"):
        convert_san_official(sd | {"module.bn2.weight": torch.zeros(3)}, allow_custom=True)
    with pytest.raises(ValueError, match="contradicts"):
        convert_san_official(sd, allow_custom=True, kernels=[3, 7, 7, 7, 7])
    pairwise = official_file(SAN(sa_type="pairwise", **SMALL))
    with pytest.raises(ValueError, match="conv_w.0.weight"):  # conv_p dropped: looks patchwise
        convert_san_official({k: v for k, v in pairwise.items() if "conv_p" not in k}, allow_custom=True)
