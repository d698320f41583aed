"""Training-free residual attention ("4 lines", CSRA paper Fig. 1) for already trained classifiers.

Zhu & Wu, "Residual Attention: A Simple but Effective Method for Multi-Label Recognition", ICCV 2021: a
classifier trained with global average pooling + a linear layer is applied at every position of its
feature map, and the class scores ``mean_k y_k + λ·max_k y_k`` replace its logits, without retraining.
With ``λ = 0`` this reproduces the original logits exactly for CNNs (``.exact``); for CLS-token ViTs the
head is applied to patch tokens it was not trained on, so the result is an approximation.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from visattn.layers.csra import _check_lam, residual_attention_logits

from ._backbone import feature_map_from_timm

__all__ = ["ResidualAttentionClassifier", "residual_attention"]


def _is_dropout(module: nn.Module) -> bool:
    return isinstance(module, (nn.Dropout, nn.Identity))


class ResidualAttentionClassifier(nn.Module):
    """``model``'s GAP + linear classifier turned into ``mean_k y_k + λ·max_k y_k`` with ``y_k = W x_k + b``.

    Supported: timm CNNs whose ``forward_head`` is global average pooling + ``nn.Linear`` (checked
    numerically on a random map when wrapping), timm ViT-like models (approximate, see below),
    torchvision ``ResNet`` (trunk + ``fc``), ``MobileNetV2`` and ``EfficientNet`` (``features`` +
    ``classifier[-1]``, the rest of ``classifier`` being dropout). The model is shared, not copied.
    ``exact`` tells whether ``lam=0`` reproduces the model's own logits: true for CNNs; false for ViTs whose
    head was trained on the CLS token (or after a LayerNorm of the averaged tokens, ``fc_norm``): there the
    head (and ``fc_norm``) are applied to each patch token, an approximation.
    """

    def __init__(self, model: nn.Module, lam: float = 0.2) -> None:
        super().__init__()
        self.model = model
        self.lam = _check_lam(lam)
        self.exact = True
        if isinstance(model, torchvision.models.ResNet):
            self.kind, fc = "torchvision-resnet", model.fc
        elif isinstance(model, (torchvision.models.MobileNetV2, torchvision.models.EfficientNet)):
            self.kind, fc = "torchvision-features", model.classifier[-1]
            if not all(_is_dropout(m) for m in list(model.classifier)[:-1]):
                raise ValueError(
                    f"{type(model).__name__}.classifier is not dropout + linear: {model.classifier}"
                )
        elif hasattr(model, "forward_features") and hasattr(model, "get_classifier"):
            fc = model.get_classifier()
            if hasattr(model, "num_prefix_tokens") and hasattr(model, "patch_embed"):
                self.kind = "timm-tokens"
                pool = getattr(model, "global_pool", None)
                if pool not in ("token", "avg") or getattr(model, "attn_pool", None) is not None:
                    raise ValueError(
                        f"{type(model).__name__} pools with {pool!r}; only 'token' or 'avg' heads can be wrapped"
                    )
                self.exact = pool == "avg" and isinstance(
                    getattr(model, "fc_norm", nn.Identity()), nn.Identity
                )
            else:
                self.kind = "timm-cnn"
        else:
            raise TypeError(
                f"residual_attention cannot wrap {type(model).__name__}: expected a timm model or a torchvision "
                "ResNet / MobileNetV2 / EfficientNet"
            )
        if not isinstance(fc, nn.Linear):
            raise ValueError(
                f"{type(model).__name__}: the classifier is {type(fc).__name__}, not nn.Linear; the head is not GAP + linear"
            )
        if self.kind == "timm-cnn":
            self._check_gap_linear(fc)

    @torch.no_grad()
    def _check_gap_linear(self, fc: nn.Linear) -> None:
        param = next(self.model.parameters())
        fmap = torch.randn(2, fc.in_features, 3, 2, generator=torch.Generator().manual_seed(0)).to(param)
        native = fmap.permute(0, 2, 3, 1) if getattr(self.model, "output_fmt", "NCHW") == "NHWC" else fmap
        was_training = self.model.training
        self.model.eval()
        try:
            reference = self.model.forward_head(native)
            ok = reference.shape == (2, fc.out_features) and torch.allclose(
                reference, fc(fmap.mean((2, 3))), atol=1e-4, rtol=1e-4
            )
        except Exception:  # a head that cannot even take a d-channel map (e.g. a conv after pooling)
            ok = False
        finally:
            self.model.train(was_training)
        if not ok:
            raise ValueError(
                f"{type(self.model).__name__}.forward_head is not global average pooling + nn.Linear"
            )

    @property
    def classifier(self) -> nn.Linear:
        if self.kind == "torchvision-resnet":
            return self.model.fc
        if self.kind == "torchvision-features":
            return self.model.classifier[-1]
        return self.model.get_classifier()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, d, h, w)`` map the classifier is applied to position by position."""
        m = self.model
        if self.kind == "torchvision-resnet":
            x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
            return m.layer4(m.layer3(m.layer2(m.layer1(x))))
        if self.kind == "torchvision-features":
            return m.features(x)
        features = m.forward_features(x)
        if self.kind == "timm-tokens" and hasattr(m, "fc_norm"):
            features = m.fc_norm(features)  # per token: the approximation documented above
        return feature_map_from_timm(m, features, x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc = self.classifier
        return residual_attention_logits(self.feature_map(x), fc.weight, fc.bias, self.lam)

    def extra_repr(self) -> str:
        return f"lam={self.lam}, kind={self.kind!r}, exact={self.exact}"


def residual_attention(model: nn.Module, lam: float = 0.2) -> ResidualAttentionClassifier:
    """Training-free residual attention ("4 lines", paper Fig. 1) around a trained GAP + linear classifier.

    Returns a module giving ``mean_k(W x_k + b) + lam · max_k(W x_k + b)``; with ``lam=0`` it equals the
    model's logits for CNNs (``.exact``), and is an approximation for CLS-token ViTs. ``lam=0.2`` follows
    :func:`visattn.layers.residual_attention_logits` (the paper's value is unverified; tune it).
    """
    return ResidualAttentionClassifier(model, lam)
