"""visattn.create_model: offline-only weights, clear errors, local pretrained files."""

import pytest
import torch

import visattn
from visattn.models import read_state_dict, save_weights


def test_pretrained_without_a_file_refuses_to_download():
    with pytest.raises(ValueError, match="does not download"):
        visattn.create_model("glyphnet", pretrained=True)


def test_unknown_model_and_missing_files():
    with pytest.raises(ValueError, match="unknown visattn model"):
        visattn.create_model("glyphnet_xl")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        visattn.create_model("glyphnet", pretrained=True, pretrained_file="nope.safetensors")


def test_pretrained_file_adapts_the_classifier(tmp_path):
    torch.manual_seed(0)
    source = visattn.create_model("glyphnet", num_classes=10)
    path = tmp_path / "glyphnet.safetensors"
    save_weights(source, path)
    target = visattn.create_model("glyphnet", pretrained=True, pretrained_file=path, num_classes=3)
    assert target.get_classifier().out_features == 3
    torch.testing.assert_close(target.stem.conv.weight, source.stem.conv.weight)


def test_read_state_dict_rejects_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": print}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_state_dict(path)
    good = tmp_path / "good.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}}, good)
    assert torch.equal(read_state_dict(good)["w"], torch.ones(2))


def test_input_config_follows_an_in_chans_override():
    """timm's resolve_data_config reads the pretrained_cfg (1 channel for glyphnet); info, bench, the
    quick-start recipe and name-only inference use the model's real channel count instead."""
    import visattn
    from visattn.models import input_config, model_info

    cfg = input_config(visattn.create_model("glyphnet", in_chans=3), img_size=32)
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == (0.0, 0.0, 0.0) and cfg["std"] == (1.0,) * 3
    assert model_info("glyphnet", in_chans=3)["input_size"] == [3, 64, 64]
    assert input_config(visattn.create_model("glyphnet"))["input_size"] == (1, 64, 64)
