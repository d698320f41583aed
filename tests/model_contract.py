"""The timm model interface every visattn classifier honours (imported by the per-family tests)."""

from __future__ import annotations

import timm
import torch

import visattn
from visattn.models import load_weights, save_weights


def check_classifier_contract(
    name: str, tmp_path, img_size: int = 64, num_classes: int = 7, **kwargs
) -> None:
    """Forward/backward, forward_features/forward_head, classifier reset, feature_info,
    features_only, safetensors round trip and timm reachability for one registered model."""
    torch.manual_seed(0)
    model = visattn.create_model(name, num_classes=num_classes, **kwargs)
    x = torch.randn(2, 3, img_size, img_size)

    model.train()
    out = model(x)
    assert out.shape == (2, num_classes)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad), "unused parameters"

    model.eval()
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        torch.testing.assert_close(model.forward_head(features), logits)
        pre = model.forward_head(features, pre_logits=True)
        assert pre.shape == (2, model.num_features)
        assert model.get_classifier() is not None

        # Save / load round trip through safetensors into a fresh instance.
        path = tmp_path / f"{name}.safetensors"
        save_weights(model, path)
        fresh = load_weights(visattn.create_model(name, num_classes=num_classes, **kwargs), path).eval()
        torch.testing.assert_close(fresh(x), logits)
        again = visattn.create_model(name, num_classes=num_classes, checkpoint_path=path, **kwargs).eval()
        torch.testing.assert_close(again(x), logits)

        model.reset_classifier(3)
        assert model(x).shape == (2, 3)
        model.reset_classifier(0)
        assert model(x).shape == (2, model.num_features)

    # feature_info and features_only
    info = model.feature_info
    assert isinstance(info, list) and all({"num_chs", "reduction", "module"} <= set(d) for d in info)
    backbone = visattn.create_model(name, features_only=True, **kwargs).eval()
    with torch.no_grad():
        maps = backbone(x)
    assert len(maps) == len(backbone.feature_info.channels())
    for fmap, chs, red in zip(
        maps, backbone.feature_info.channels(), backbone.feature_info.reduction(), strict=True
    ):
        assert fmap.shape[1] == chs
        assert abs(fmap.shape[-1] - img_size / red) <= 1, (fmap.shape, red)

    # timm's own factory reaches the model.
    assert name in timm.list_models(name)
    assert isinstance(timm.create_model(name, num_classes=num_classes, **kwargs), torch.nn.Module)
