"""The application layer's promises: one run loader, one override parser, EMA-aware weights, retention.

* every command (``eval``, ``predict``, ``visualize``, ``export``) feeds the model the same tensor for the
  same image file, for a single-label (ImageNet-style Resize + CenterCrop), a multi-label (``resize_before``)
  and a dense (segmentation) recipe;
* ``--set`` values are parsed by one function, the same in every subcommand;
* EMA runs: epoch checkpoints and ``best`` load their EMA weights, ``best`` follows an ``ema_*`` metric;
* ``train.keep_checkpoints`` prunes epoch checkpoints and ``--resume`` still works;
* the dataset registry is complete after ``import visattn.data`` alone;
* ``export_onnx`` leaves the caller's model and the operator registry as they were;
* ``predict`` writes class maps for segmentation recipes and COCO-format keypoints for pose recipes.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from data_fixtures import cli_train
from PIL import Image
from safetensors.torch import load_file, save_file
from test_data_voc_seg import make_voc_seg

from visattn.cli import main
from visattn.config import load_config, parse_overrides, parse_value
from visattn.inference import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
GLYPH = ROOT / "configs" / "glyph_canvas_csra.yaml"
TINY = ["data.kwargs.num_samples={train: 64, val: 32, test: 32}", "data.batch_size=32", "train.epochs=1"]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


# ------------------------------------------------------------------------------------------- --set values
SET_VALUES = {
    "1e-3": 0.001,
    "5": 5,
    "true": True,
    "null": None,
    "[1, 2]": [1, 2],
    "{a: 1}": {"a": 1},
    "dot": "dot",
    "-2.5E2": -250.0,
}


@pytest.mark.parametrize("text", SET_VALUES)
def test_override_values_are_yaml_scalars(text):
    assert parse_value(text) == SET_VALUES[text]
    assert type(parse_value(text)) is type(SET_VALUES[text])


def test_every_subcommand_parses_set_through_the_one_parser(monkeypatch, tmp_path):
    """Each subcommand's --set / --model-arg reaches its target as the value parse_value gives."""
    import visattn.cli.bench as cli_bench
    import visattn.cli.models as cli_models
    import visattn.inference.run as run

    items = [f"k{i}={text}" for i, text in enumerate(SET_VALUES)]
    expected = {f"k{i}": value for i, value in enumerate(SET_VALUES.values())}
    assert parse_overrides(items) == expected
    seen: dict[str, dict] = {}

    class StopCommandError(Exception):
        pass

    def grab(where):
        def fake(*args, **kwargs):
            seen[where] = kwargs
            raise StopCommandError

        return fake

    monkeypatch.setattr(cli_models, "model_info", lambda name, size, conv, **kw: grab("info")(**kw))
    monkeypatch.setattr(cli_bench, "benchmark_model", lambda name, **kw: grab("bench")(**kw["model_kwargs"]))
    monkeypatch.setattr(cli_bench, "matmul_peak_gflops", lambda *a, **k: 1.0)
    monkeypatch.setattr(run, "_from_name", lambda name, kwargs, *rest: grab("export")(**kwargs))
    with pytest.raises(StopCommandError):
        main(["info", "glyphnet", *sets(*items)])
    with pytest.raises(StopCommandError):
        main(["export", "--model", "glyphnet", *[a for i in items for a in ("--model-arg", i)]])
    with pytest.raises(StopCommandError):
        main(["bench", "glyphnet", *sets(*items)])
    for where in ("info", "export", "bench"):
        assert seen[where] == expected, where

    # Recipes: the same values at a nested key (train, eval, predict, visualize all load recipes this way).
    config = load_config(GLYPH, ["optim.lr=1e-3", "model.kwargs.lam=1e-3", "train.sync_bn=false"])
    assert config["optim"]["lr"] == 0.001 and config["model"]["kwargs"]["lam"] == 0.001
    recipe = tmp_path / "r.yaml"
    recipe.write_text("_base_: " + str(GLYPH) + "\noptim: {lr: 1e-3}\n")
    assert load_config(recipe)["optim"]["lr"] == 0.001  # recipe files read YAML 1.2 numbers too


def test_train_accepts_exponent_learning_rates(tmp_path):
    rows = cli_train(GLYPH, tmp_path / "run", *sets(*TINY, "optim.lr=1e-3", "model.kwargs.lam=2e-1"))
    assert len(rows) == 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["optim"]["lr"] == 0.001 and config["model"]["kwargs"]["lam"] == 0.2


# ------------------------------------------------------------------------------ one input per image file
def _odd_photo(path: Path, seed: int, size=(44, 30)) -> Path:
    """A non-square RGB image: squashing it and Resize + CenterCrop give different model inputs."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([yy * 255 // h, xx * 255 // w, (yy + xx) * 255 // (h + w)], -1)
    noise = rng.integers(0, 40, (h, w, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path)
    return path


def _single_label(root: Path) -> tuple[dict, Path]:
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            _odd_photo(root / split / c / "a.png", seed=len(c))
    recipe = {
        "task": "classification",
        "model": {"name": "glyphnet", "kwargs": {"in_chans": 3, "width": 8}},
        "data": {
            "name": "imagefolder",
            "kwargs": {"root": str(root)},
            "train_split": "train",
            "val_split": "val",
            "img_size": 24,
            "train_transform": "imagenet",  # eval: Resize(round(24 / 0.875)) + CenterCrop(24)
            "mean": [0.5, 0.4, 0.3],
            "std": [0.2, 0.25, 0.3],
            "batch_size": 2,
        },
        "eval": {"metric": "top1"},
    }
    return recipe, root / "val" / "cat" / "a.png"


def _multi_label(root: Path) -> tuple[dict, Path]:
    image = _odd_photo(root / "img" / "a.png", seed=3)
    for split in ("train", "test"):
        (root / f"{split}.csv").write_text("path,cat,dog,bird\nimg/a.png,1,0,1\n")
    recipe = {
        "task": "multilabel",
        "model": {
            "name": "csra",
            "kwargs": {"backbone": "glyphnet", "num_heads": 1, "lam": 0.1, "in_chans": 3},
        },
        "data": {
            "name": "multilabel_csv",
            "kwargs": {
                "files": {"train": str(root / "train.csv"), "test": str(root / "test.csv")},
                "encoding": "binary",
            },
            "train_split": "train",
            "val_split": "test",
            "img_size": 32,
            "resize_before": 40,  # VAA-style: squash to 40 x 40, then the evaluation centre crop of 32
            "batch_size": 1,
        },
    }
    return recipe, image


def _dense(root: Path) -> tuple[dict, Path]:
    voc = make_voc_seg(root)
    recipe = {
        "task": "segmentation",
        "task_kwargs": {"eval_pad_to": [24, 20]},
        "model": {"name": "psa_seg_glyphnet", "kwargs": {"in_chans": 3, "width": 8}},
        "data": {
            "name": "voc2012_seg",
            "kwargs": {"root": str(root / "VOCdevkit")},
            "train_split": "train",
            "val_split": "val",
            "img_size": 16,
            "mean": [0.4, 0.4, 0.4],
            "std": [0.3, 0.3, 0.3],
            "batch_size": 1,
        },
        "eval": {"metric": "mIoU"},
    }
    return recipe, voc / "JPEGImages" / "2007_000033.jpg"


class FirstInputs:
    """Records the input of the outermost model call of each command (a global forward pre-hook)."""

    def __init__(self, model_type: str) -> None:
        self.model_type, self.inputs = model_type, []

    def __call__(self, module, args):
        if type(module).__name__ == self.model_type and args and torch.is_tensor(args[0]):
            self.inputs.append(args[0].detach().clone())

    def take(self) -> torch.Tensor:
        assert self.inputs, f"no {self.model_type} call recorded"
        first = self.inputs[0]
        self.inputs = []
        return first[0]


@pytest.mark.parametrize("make", [_single_label, _multi_label, _dense], ids=["single", "multi", "dense"])
def test_eval_predict_visualize_export_feed_the_same_tensor(make, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("onnx")
    recipe, image = make(tmp_path / "data")
    recipe["output"] = str(tmp_path / "run")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    config = load_config(path)
    model = load_trained_model(None, config=path).model  # initial weights, sized by the data's classes
    checkpoint = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    hook = FirstInputs(type(model).__name__)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        common = ["--checkpoint", str(checkpoint)]
        assert main(["eval", str(path), *common]) == 0
        evaluated = hook.take()
        assert main(["predict", str(path), str(image), *common, "--out", str(tmp_path / "pred")]) == 0
        predicted = hook.take()
        assert (
            main(["visualize", str(image), *common, "--config", str(path), "--out", str(tmp_path / "v")]) == 0
        )
        visualized = hook.take()
        onnx_file = tmp_path / "m.onnx"
        export = [
            "export",
            str(checkpoint),
            "--config",
            str(path),
            "--image",
            str(image),
            "--out",
            str(onnx_file),
        ]
        assert main([*export, "--exporter", "legacy", "--no-check"]) == 0
        exported = hook.take()
    finally:
        handle.remove()
    # The recipe's evaluation pipeline, not a square resize of the whole image:
    side = config["data"]["img_size"]
    if config["task"] != "segmentation":
        assert tuple(evaluated.shape[-2:]) == (side, side)
    for name, tensor in (("predict", predicted), ("visualize", visualized), ("export", exported)):
        torch.testing.assert_close(tensor, evaluated, rtol=0, atol=0, msg=f"{name} differs from eval")


# ------------------------------------------------------------------------------------------- EMA runs
def test_ema_runs_load_ema_weights_and_best_follows_an_ema_metric(tmp_path, capsys):
    out = tmp_path / "run"
    rows = cli_train(
        GLYPH,
        out,
        *sets(
            *TINY,
            "data.batch_size=16",
            "train.epochs=3",
            "train.ema=true",
            "train.ema_decay=0.5",
            "eval.metric=ema_mAP",
        ),
    )
    ema_maps = [float(r["ema_mAP"]) for r in rows]
    best_epoch = int(np.argmax(ema_maps)) + 1
    best = load_file(str(out / "best.safetensors"))
    epoch_file = out / "checkpoints" / f"epoch_{best_epoch:04d}.safetensors"
    saved = load_file(str(epoch_file))
    # best holds the model and EMA weights of the epoch with the best ema_mAP
    assert set(best) == set(saved) and any(k.startswith("ema.") for k in best)
    for key in best:
        torch.testing.assert_close(best[key], saved[key])

    for checkpoint in (epoch_file, out / "best.safetensors"):
        loaded = load_trained_model(checkpoint)
        assert loaded.weights == "ema"
        state = loaded.model.state_dict()
        for key, value in state.items():
            torch.testing.assert_close(value, saved[f"ema.{key}"])
        raw = load_trained_model(checkpoint, ema=False)
        assert raw.weights == "model"
        assert any(not torch.equal(raw.model.state_dict()[k], v) for k, v in state.items())

        metrics_file = tmp_path / "m.json"
        assert (
            main(
                [
                    "eval",
                    str(GLYPH),
                    *sets(*TINY),
                    "--checkpoint",
                    str(checkpoint),
                    "--split",
                    "val",  # the selection split, where ema_mAP was logged
                    "--output",
                    str(metrics_file),
                ]
            )
            == 0
        )
        record = json.loads(metrics_file.read_text())
        assert record["mAP"] == pytest.approx(ema_maps[best_epoch - 1], abs=1e-6)
        assert record["split"] == "split 'val'"
        capsys.readouterr()
        image = tmp_path / "canvas.png"
        Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(image)
        assert main(["predict", str(GLYPH), str(image), "--checkpoint", str(checkpoint), "--json"]) == 0
        (result,) = json.loads(capsys.readouterr().out)
        x = loaded.input_of(image).unsqueeze(0)
        with torch.no_grad():
            expected = torch.sigmoid(loaded.model(x))[0]
        got = torch.tensor([result["scores"][n] for n in loaded.class_names])
        torch.testing.assert_close(got, expected)


# --------------------------------------------------------------------------------------- retention
def test_keep_checkpoints_prunes_and_resume_still_works(tmp_path):
    out = tmp_path / "run"
    args = [*TINY, "train.keep_checkpoints=2", "train.epochs=5"]
    cli_train(GLYPH, out, *sets(*args, "eval.every=5"))  # best is written at epoch 5 only
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == [
        "epoch_0004.safetensors",
        "epoch_0004.state.pt",
        "epoch_0005.safetensors",
        "epoch_0005.state.pt",
        "last.txt",
    ]
    assert (out / "best.safetensors").is_file()
    # Resume from the kept latest checkpoint and train two more epochs: still two epoch checkpoints.
    assert main(["train", str(GLYPH), *sets(*args, "train.epochs=7", f"output={out}"), "--resume"]) == 0
    names = sorted(p.name for p in (out / "checkpoints").glob("*.safetensors"))
    assert names == ["epoch_0006.safetensors", "epoch_0007.safetensors"]
    assert (out / "checkpoints" / "last.txt").read_text().strip() == "epoch_0007"
    # `--checkpoint last` / `best` name the files of the recipe's run.
    for which in ("last", "best"):
        metrics_file = tmp_path / f"{which}.json"
        eval_args = [
            "eval",
            str(GLYPH),
            "--checkpoint",
            which,
            "--split",
            "val",
            "--output",
            str(metrics_file),
        ]
        assert main([*eval_args, *sets(*TINY, f"output={out}")]) == 0
        assert json.loads(metrics_file.read_text())["num_samples"] == 32
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert json.loads((tmp_path / "last.json").read_text())["mAP"] == pytest.approx(float(rows[-1]["mAP"]))


def test_log_interval_lines_and_end_of_fit_callbacks(tmp_path, caplog):
    from visattn.engine.build import build_trainer

    config = load_config(
        GLYPH, [*TINY, "data.batch_size=8", "train.log_interval=3", f"output={tmp_path / 'run'}"]
    )
    trainer = build_trainer(config)
    called = []
    trainer.callbacks += [lambda t: called.append(t.best["epoch"]), lambda t: 1 / 0]
    with caplog.at_level(logging.INFO, logger="visattn"):
        result = trainer.fit()
    steps = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    assert [m.split()[3] for m in steps] == ["3/8", "6/8"]  # 64 samples / batch 8 = 8 steps, every 3rd
    assert all("loss" in m and "samples/s" in m for m in steps)
    assert called == [1] and result["best"]["epoch"] == 1  # the raising callback did not fail the run
    assert any("callback" in r.getMessage() and "ZeroDivisionError" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------------------ registry
def test_list_datasets_is_complete_after_importing_only_visattn_data():
    code = (
        "import sys, visattn.data as d; print(','.join(d.list_datasets()));"
        "print(any(m.startswith('visattn.engine') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, engine_loaded = out.split()
    expected = {"voc2012_seg", "cityscapes", "glyph_seg", "glyph_keypoints", "coco_keypoints", "glyph_canvas"}
    assert expected <= set(names.split(",")) and engine_loaded == "False"
    from visattn.data import create_dataset

    seg = create_dataset("glyph_seg", split="test", num_samples=2, canvas_size=32)
    assert len(seg) == 2


# ------------------------------------------------------------------------------------------- export
def test_export_onnx_leaves_model_and_registry_unchanged(tmp_path):
    pytest.importorskip("onnx")
    from visattn.export import export_onnx
    from visattn.models import create_model
    from visattn.ops import available_implementations
    from visattn.ops import local_attention as la

    model = create_model("san10_pairwise", layers=[1, 1, 0, 0, 0], kernels=[3] * 5, num_classes=3)
    model = model.to(torch.float64).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    registry = dict(la._IMPLEMENTATIONS)
    order = available_implementations()
    export_onnx(model, tmp_path / "san.onnx", input_size=(3, 32, 32), exporter="legacy", check=False)
    assert model.training and next(model.parameters()).dtype == torch.float64
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert registry == la._IMPLEMENTATIONS and available_implementations() == order


def test_use_implementation_is_scoped():
    from visattn.ops import local_aggregation, use_implementation
    from visattn.ops import local_attention as la

    picked = []
    x = torch.randn(1, 4, 6, 6)
    w = torch.randn(1, 2, 9, 36)
    real = la._pick

    def spy(impl, t):
        picked.append(real(impl, t).name)
        return real(impl, t)

    la._pick = spy
    try:
        local_aggregation(x, w, kernel_size=3, padding=1)
        with use_implementation("reference"):
            local_aggregation(x, w, kernel_size=3, padding=1)
        local_aggregation(x, w, kernel_size=3, padding=1)
    finally:
        la._pick = real
    assert picked[1] == "reference" and picked[0] == picked[2] != "reference"
    with pytest.raises(ValueError, match="unknown implementation"), use_implementation("nope"):
        pass


# ---------------------------------------------------------------------------------- dense predictions
def test_predict_segmentation_writes_class_maps(tmp_path, capsys):
    recipe, image = _dense(tmp_path / "data")
    recipe["output"] = str(tmp_path / "run")
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(recipe))
    model = load_trained_model(None, config=path).model
    checkpoint = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    out = tmp_path / "pred"
    assert main(["predict", str(path), str(image), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    png = Image.open(result["class_map"])
    assert png.mode == "P" and png.size == Image.open(image).size  # the image's own size, padding cropped
    classes = np.asarray(png)
    loaded = load_trained_model(checkpoint, config=path)
    fractions = {
        loaded.class_names[c]: n / classes.size for c, n in enumerate(np.bincount(classes.reshape(-1))) if n
    }
    assert result["class_fractions"] == pytest.approx(fractions, abs=1e-6)
    assert json.loads((out / "predictions.json").read_text()) == [result]


def test_predict_keypoints_in_coco_results_format(tmp_path, capsys):
    out = tmp_path / "run"
    recipe = ROOT / "configs" / "psa_glyph_pose.yaml"
    cli_train(
        recipe,
        out,
        *sets(
            "data.kwargs.num_samples={train: 16, val: 8, test: 8}",
            "data.batch_size=8",
            "train.epochs=1",
            "eval.metric=PCK",
        ),
    )
    image = tmp_path / "glyph.png"
    Image.fromarray(np.pad(np.full((20, 12), 255, np.uint8), 6)).save(image)
    capsys.readouterr()
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                str(recipe),
                str(image),
                "--checkpoint",
                str(out / "best.safetensors"),
                "--out",
                str(pred),
            ]
        )
        == 0
    )
    (result,) = json.loads(capsys.readouterr().out)
    names = json.loads((out / "class_names.json").read_text())
    assert result["category_id"] == 1 and len(result["keypoints"]) == 3 * len(names)
    xs, ys = result["keypoints"][0::3], result["keypoints"][1::3]
    # inside the evaluation crop of the whole 24 x 32 image: 40 x 40 px (padding 1.25, square input)
    assert all(-8.5 <= x <= 32.5 for x in xs) and all(-4.5 <= y <= 36.5 for y in ys)
    assert Image.open(result["overlay"]).size[0] >= 24
    assert json.loads((pred / "predictions.json").read_text()) == [result]

    # The mapping back to image pixels: a Gaussian at the heatmap's centre is the centre of the crop, i.e.
    # of the image (pixel centres 0..23 and 0..31); one at heatmap column 0 is the crop's left edge.
    from visattn.data.heatmaps import encode_heatmaps
    from visattn.inference import predict

    loaded = load_trained_model(out / "best.safetensors")
    K = len(names)

    class FixedHeatmaps(torch.nn.Module):
        def __init__(self, u):
            super().__init__()
            self.u = u

        def forward(self, x):
            points = torch.tensor([[self.u, 7.5]] * K)
            heat, _ = encode_heatmaps(points, torch.ones(K), (16, 16), 1.0)
            return heat.expand(x.shape[0], -1, -1, -1)

    loaded.model = FixedHeatmaps(7.5)
    (centre,) = predict(loaded, [image])
    np.testing.assert_allclose(centre["keypoints"][0::3], [11.5] * K, atol=0.05)
    np.testing.assert_allclose(centre["keypoints"][1::3], [15.5] * K, atol=0.05)
    loaded.model = FixedHeatmaps(0.0)
    (left,) = predict(loaded, [image])  # the crop: 40 px (32 * 1.25) centred on x = 11.5, left edge -8.5
    np.testing.assert_allclose(left["keypoints"][0::3], [11.5 - 20] * K, atol=0.05)
