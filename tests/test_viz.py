"""Attention contact sheets, training reports and the Grad-CAM comparison (visattn.viz)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from PIL import Image  # noqa: E402

import visattn  # noqa: E402
from visattn.cli import main  # noqa: E402
from visattn.viz import (  # noqa: E402
    attention_panels,
    collect_attention,
    render_contact_sheet,
    san_footprint,
    visualize,
    write_training_report,
)
from visattn.viz.overlay import sheet_size  # noqa: E402
from visattn.viz.report import plot_confusion_matrix, read_log  # noqa: E402

# Brief CSRA training on the built-in canvases (measured on the 2-core dev machine: test mAP ~0.56,
# class-map peak on a glyph of that class for 87 % of (image, present digit) pairs; the full demo: 99 %).
TRAIN = [
    "data.kwargs.num_samples.train=600",
    "data.kwargs.num_samples.val=100",
    "data.kwargs.num_samples.test=100",
    "train.epochs=3",
]
TRAIN += ["data.batch_size=16", "train.seed=0", "data.kwargs.seed=0"]
MIN_PEAK_RATE = 0.7


def _png(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _assert_picture(path, size=None) -> None:
    array = _png(path)
    if size is not None:
        assert (array.shape[1], array.shape[0]) == size
    assert array.std() > 5  # not a constant image


@pytest.fixture(scope="session")
def csra_run(tmp_path_factory):
    """A short real training run of configs/glyph_canvas_csra.yaml: ``(run directory, validation set)``.

    Trained once per test session: pytest-xdist workers share it through a lock in the common temporary
    folder (the pattern of the pytest-xdist docs), so the run is not repeated on every worker.
    """
    pytest.importorskip("mlxtend")
    from filelock import FileLock

    from visattn.config import load_config
    from visattn.engine.build import build_datasets, build_trainer

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder shared by all workers of this session
    out = root / "visattn_viz_csra_run"
    with FileLock(str(out) + ".lock"):
        config = load_config("configs/glyph_canvas_csra.yaml", [f"output={out}", *TRAIN])
        if not (out / "log.csv").is_file():
            trainer = build_trainer(config)
            trainer.fit()
    return out, build_datasets(config, ("val",))["val"]


def test_csra_maps_peak_on_glyphs_of_their_class(csra_run):
    from visattn.demo import peak_in_glyph_rate
    from visattn.inference import load_trained_model

    run, dataset = csra_run
    loaded = load_trained_model(run / "best.safetensors")  # rebuilt from the run's config.json
    images = torch.stack([dataset[i][0] for i in range(len(dataset))])
    record = collect_attention(loaded.model, images)
    scores = record.maps["classifier.heads.0"]["score"]
    assert scores.shape == (len(dataset), 10, 8, 8)
    rate = peak_in_glyph_rate(scores, dataset)
    assert rate >= MIN_PEAK_RATE, f"class-map peak on a glyph of its class in only {rate:.1%} of pairs"
    # The panels show the maps of the most probable classes, with the peak marked on the score map.
    panels = attention_panels(record, 0, loaded.class_names, topk=3)
    assert [p.group for p in panels] == ["CSRA"] * 3
    assert panels[0].class_name == loaded.class_names[int(torch.sigmoid(record.output[0]).argmax())]
    np.testing.assert_array_equal(panels[0].heat, scores[0, int(panels[0].class_name)].numpy())
    # Drawn as sigmoid(S) on a fixed [0, 1] scale, so the most probable class is drawn hotter than the
    # least probable one, which is mostly cold (a per-map stretch drew every class from blue to red).
    # Measured on this run, item 0: mean sigmoid(S) 0.39 for the top class (p 0.66), 0.085 for the last
    # (p 0.04), whose peak still reaches 0.42 where its score is locally positive.
    panels = attention_panels(record, 0, loaded.class_names, topk=10)
    fig = render_contact_sheet(images[0], panels)
    drawn = [ax.images[-1] for ax in fig.axes if ax.get_title().startswith("CSRA")]
    assert len(drawn) == 10
    for panel, im in zip(panels, drawn, strict=True):
        assert (im.norm.vmin, im.norm.vmax) == (0.0, 1.0)
        np.testing.assert_allclose(
            im.get_array(), torch.sigmoid(torch.from_numpy(panel.heat)).numpy(), rtol=1e-6
        )
    assert drawn[0].get_array().mean() > drawn[-1].get_array().mean()
    assert drawn[-1].get_array().mean() < 0.25


def test_visualize_samples_and_files(csra_run, tmp_path):
    from visattn.inference import load_trained_model
    from visattn.viz import visualize_run

    run, dataset = csra_run
    image = tmp_path / "canvas.png"
    Image.fromarray((dataset[1][0][0].numpy() * 255).astype(np.uint8)).save(image)
    loaded = load_trained_model(run / "best.safetensors")
    written = visualize_run(loaded, tmp_path / "out", [image], samples=2)
    assert [p.name for p in written] == [
        "canvas_attention.png",
        "sample_0000_attention.png",
        "sample_0001_attention.png",
    ]
    for path in written:  # input + 3 CSRA maps: one row of 4 cells of 2.5 in (+ 0.5 in title), 100 dpi
        _assert_picture(path, size=(1000, 300))


def test_cli_visualize_and_report(csra_run, tmp_path, capsys):
    run, _ = csra_run
    out = tmp_path / "viz"
    args = ["visualize", "--checkpoint", str(run / "best.safetensors"), "--samples", "1", "--out", str(out)]
    assert main([*args, "--topk", "2"]) == 0
    _assert_picture(out / "sample_0000_attention.png", size=(1000, 300))
    shutil.copytree(run, tmp_path / "run")  # the report is written into the run directory
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "report_curves.png" in capsys.readouterr().out
    assert main(["visualize", "--out", str(out)]) == 2  # nothing to draw: an error, not a traceback


def test_training_report_from_a_real_run(csra_run, tmp_path):
    from visattn.viz.report import evaluate_run

    run = tmp_path / "run"  # a copy: other tests read the shared run
    shutil.copytree(csra_run[0], run)
    log = read_log(run / "log.csv")
    assert list(log["epoch"]) == [1, 2, 3] and "mAP" in log and "lr" in log
    metrics = evaluate_run(run)  # the best checkpoint on the test split, per-class AP included
    assert metrics["AP"].shape == (10,)
    written = write_training_report(run, metrics=metrics, metrics_source="last epoch")
    assert [p.name for p in written] == ["report_curves.png", "report_per_class.png"]
    _assert_picture(run / "report_curves.png", size=(1200, 340))
    _assert_picture(run / "report_per_class.png")


def test_confusion_matrix_from_predictions(tmp_path):
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 4, 200)
    predictions = np.where(rng.random(200) < 0.8, targets, rng.integers(0, 4, 200))
    fig = plot_confusion_matrix(
        predictions=predictions, targets=targets, class_names="abcd", path=tmp_path / "cm.png"
    )
    _assert_picture(tmp_path / "cm.png")
    assert "accuracy" in fig.axes[0].get_title()
    # A metrics dict with a confusion matrix (classification task) gives the same picture.
    (tmp_path / "log.csv").write_text("epoch,train_loss,lr,top1\n1,1.5,0.1,0.5\n2,1.0,0.01,0.7\n")
    cm = np.bincount(targets * 4 + predictions, minlength=16).reshape(4, 4)
    written = write_training_report(
        tmp_path, metrics={"confusion_matrix": cm, "per_class_accuracy": cm.diagonal() / cm.sum(1)}
    )
    assert [p.name for p in written] == ["report_curves.png", "report_per_class.png", "report_confusion.png"]


# ------------------------------------------------------------------ every attention type, untrained
def _small(name, **kwargs):
    torch.manual_seed(0)
    return visattn.create_model(name, **kwargs).eval()


@pytest.mark.parametrize(
    ("model_kwargs", "size", "groups"),
    [
        (
            {"name": "csra", "backbone": "resnet18", "num_classes": 5, "num_heads": 2, "lam": 0.5},
            64,
            {"CSRA": 6},
        ),
        ({"name": "vaa", "backbone": "resnet18", "num_classes": 6, "img_size": 64}, 64, {"VAA": 6}),
        ({"name": "resattnet92_cifar", "num_classes": 10}, 32, {"RAN": 6}),
        ({"name": "psa_resnet18", "num_classes": 5}, 64, {"PSA": 16}),
    ],
    ids=["csra", "vaa", "ran", "psa"],
)
def test_panels_of_every_attention_type(model_kwargs, size, groups, tmp_path):
    kwargs = dict(model_kwargs)
    model = _small(kwargs.pop("name"), **kwargs)
    record = collect_attention(model, torch.rand(1, 3, size, size))
    panels = attention_panels(record, topk=3)
    counts = {g: sum(p.group == g for p in panels) for g in {p.group for p in panels}}
    assert counts == groups
    if "PSA" in groups:  # channel weights as bars, spatial masks as maps
        bars = [p for p in panels if p.bars is not None]
        assert len(bars) == 8 and bars[-1].bars.shape == (512,) and (bars[-1].bars > 0).all()
    # Render the last stage only (fast): the layers filter takes shell patterns.
    last = [p for p in panels if p.module.startswith(panels[-1].module.rsplit(".", 2)[0])] or panels[-2:]
    fig = render_contact_sheet(torch.rand(3, size, size), last, title="t", path=tmp_path / "s.png")
    _assert_picture(tmp_path / "s.png", size=sheet_size(last))
    assert fig.get_size_inches()[0] == 10.0


def test_san_weights_at_pixels(tmp_path):
    model = _small("san10_pairwise", layers=(1, 1, 1, 1, 1), kernels=(3, 3, 3, 3, 3), num_classes=5)
    fig = visualize(
        model,
        torch.rand(3, 64, 64),
        multilabel=False,
        pixels=[(10, 10), (40, 32)],
        layers=["layer0.*", "layer3.*"],
        path=tmp_path / "san.png",
    )
    panels = [ax for ax in fig.axes if ax.get_title().startswith("SAN")]
    assert len(panels) == 4  # 2 layers x 2 pixels
    _assert_picture(tmp_path / "san.png", size=(1000, 550))


def test_san_footprint_geometry():
    K = 3
    w = torch.softmax(torch.randn(2, K * K, 5, 6), dim=1)  # (Cw, K², H_out, W_out)
    inner = san_footprint(w, (5, 6), (2, 3), K)
    np.testing.assert_allclose(inner[1:4, 2:5], w[:, :, 2, 3].mean(0).view(K, K).numpy(), rtol=1e-6)
    assert inner.sum() == pytest.approx(1.0)
    corner = san_footprint(w, (5, 6), (0, 0), K)  # reflect: the out-of-range row/column fold back
    assert corner.sum() == pytest.approx(1.0) and corner[2:, :].sum() == 0 and corner[:, 2:].sum() == 0
    zeros = san_footprint(w, (5, 6), (0, 0), K, padding_mode="zeros")
    assert zeros.sum() < 1.0 and (zeros[:2, :2] > 0).all()
    strided = san_footprint(w[:, :, :3, :3], (6, 6), (1, 1), K, stride=2, dilation=2, padding=2)
    assert set(zip(*np.nonzero(strided), strict=True)) == {(y, x) for y in (0, 2, 4) for x in (0, 2, 4)}


def test_gradcam_comparison(csra_run, tmp_path):
    pytest.importorskip("pytorch_grad_cam")
    from visattn.inference import load_trained_model
    from visattn.viz.gradcam import default_target_layer, gradcam_maps

    run, dataset = csra_run
    loaded = load_trained_model(run / "best.safetensors")
    assert default_target_layer(loaded.model) == "backbone.model.stages.3"
    x = dataset[0][0]
    maps = gradcam_maps(loaded.model, x, [0, 1, 2])
    assert maps.shape == (3, 64, 64) and maps.min() >= 0 and maps.max() <= 1 and maps.std() > 0
    fig = visualize(loaded.model, x, class_names=loaded.class_names, gradcam=True, path=tmp_path / "g.png")
    assert sum(ax.get_title().startswith("GradCAM") for ax in fig.axes) == 3
    _assert_picture(tmp_path / "g.png", size=(1000, 550))  # a second row for Grad-CAM


def test_plugins_import_without_optional_dependencies():
    """The CLI imports its command modules, visattn.export and visattn.inference: no optional package at
    module level (matplotlib, onnx... are imported when a command runs)."""
    import ast
    import importlib.util

    optional = {"matplotlib", "onnx", "onnxruntime", "onnxscript", "pytorch_grad_cam", "cv2"}
    for module in (
        "visattn.viz",
        "visattn.cli",
        "visattn.cli.viz",
        "visattn.cli.export",
        "visattn.cli.options",
        "visattn.cli.predict",
        "visattn.export",
        "visattn.export.onnx",
        "visattn.inference",
        "visattn.inference.run",
        "visattn.inference.predict",
    ):
        tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {
            (n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and not n.level
        }
        assert not names & optional, (module, names)
