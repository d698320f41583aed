"""A practitioner's first hour: class vocabularies matched by name, training without YAML, the
``visattn.load_run`` API, predict on folders and globs with a results file, a start-of-run summary and ETA."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import visattn
from visattn.cli import main
from visattn.config import load_config
from visattn.engine.build import build_datasets

ROOT = Path(__file__).resolve().parents[1]
GLYPH = ROOT / "configs" / "glyph_canvas_csra.yaml"


def _image(path: Path, seed: int, size=(16, 16)) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3)).astype(np.uint8)).save(path)
    return path


def _csv(path: Path, header: list[str], rows: list[tuple[str, ...]]) -> Path:
    path.write_text("\n".join([",".join(header), *(",".join(r) for r in rows)]) + "\n")
    return path


def _csv_recipe(tmp_path: Path, test_header: list[str], test_rows) -> Path:
    for i in range(4):
        _image(tmp_path / f"{i}.png", i)
    train = _csv(
        tmp_path / "train.csv",
        ["path", "cat", "dog"],
        [("0.png", "1", "0"), ("1.png", "0", "1"), ("2.png", "1", "1")],
    )
    test = _csv(tmp_path / "test.csv", test_header, test_rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "task: multilabel\nmodel: {name: glyphnet, kwargs: {in_chans: 3, width: 8}}\n"
        f"data: {{name: multilabel_csv, kwargs: {{files: {{train: {train}, test: {test}}}, encoding: binary}}, "
        "val_split: train, test_split: test, img_size: 16, batch_size: 2}\n"
        f"output: {tmp_path / 'run'}\n"
    )
    return recipe


# ------------------------------------------------------------------------------------------- vocabulary
def test_test_columns_are_matched_by_name_not_position(tmp_path):
    # test.csv lists the classes in the other order: by position, 3.png would be a "cat" (it is a dog).
    recipe = _csv_recipe(tmp_path, ["path", "dog", "cat"], [("3.png", "1", "0"), ("0.png", "0", "1")])
    data = build_datasets(load_config(recipe), ("train", "test"))
    assert data["test"].class_names == ["cat", "dog"]
    torch.testing.assert_close(data["test"].targets, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_a_header_typo_is_an_error_naming_the_file(tmp_path):
    recipe = _csv_recipe(tmp_path, ["path", "cat", "dgo"], [("3.png", "1", "0")])
    with pytest.raises(ValueError, match=r"test\.csv.*dgo"):
        build_datasets(load_config(recipe), ("train", "test"))


def test_eval_matches_the_runs_vocabulary_by_name(tmp_path, capsys):
    recipe = _csv_recipe(tmp_path, ["path", "cat", "dog"], [("3.png", "0", "1"), ("0.png", "1", "0")])
    assert main(["train", str(recipe), "--set", "train.epochs=1"]) == 0
    out = tmp_path / "a.json"
    assert main(["eval", str(recipe), "--checkpoint", "best", "--output", str(out)]) == 0
    swapped = _csv(
        tmp_path / "swapped.csv", ["path", "dog", "cat"], [("3.png", "1", "0"), ("0.png", "0", "1")]
    )
    out2 = tmp_path / "b.json"
    argv = ["eval", str(recipe), "--checkpoint", "best", "--output", str(out2)]
    assert main([*argv, "--set", f"data.kwargs.files.test={swapped}"]) == 0
    a, b = json.loads(out.read_text()), json.loads(out2.read_text())
    assert a["class_names"] == b["class_names"] == ["cat", "dog"]
    assert a["AP"] == pytest.approx(b["AP"], nan_ok=True) and a["mAP"] == pytest.approx(b["mAP"])


# ---------------------------------------------------------------------------------------- without YAML
def test_train_without_a_recipe_on_an_image_folder(tmp_path, capsys):
    for split, n in (("train", 6), ("val", 2)):
        for c in ("ant", "bee"):
            for i in range(n):
                _image(tmp_path / "data" / split / c / f"{i}.png", hash((split, c, i)) % 1000, size=(20, 24))
    out = tmp_path / "run"
    argv = ["train", "--model", "glyphnet", "--data", str(tmp_path / "data"), "--epochs", "1"]
    argv += [
        "--model-arg",
        "in_chans=3",
        "--model-arg",
        "width=8",
        "--output",
        str(out),
        "--set",
        "data.batch_size=4",
    ]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "classification" and config["data"]["name"] == "imagefolder"
    assert config["data"]["val_split"] == "val" and config["eval"]["metric"] == "top1"
    assert config["data"]["img_size"] == 64  # the model's own input size (pretrained_cfg)
    assert json.loads((out / "class_names.json").read_text()) == ["ant", "bee"]
    capsys.readouterr()
    img = tmp_path / "data" / "val" / "bee" / "0.png"
    assert main(["predict", str(out / "config.json"), str(img), "--checkpoint", "best", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert set(result["scores"]) == {"ant", "bee"} and sum(result["scores"].values()) == pytest.approx(1.0)
    assert main(["train", str(GLYPH), "--model", "glyphnet"]) == 2  # a recipe or --model, not both


def test_train_without_a_recipe_on_csv_files(tmp_path):
    recipe = _csv_recipe(tmp_path, ["path", "cat", "dog"], [("3.png", "0", "1")])  # writes the CSVs
    out = tmp_path / "quick"
    argv = ["train", "--model", "glyphnet", "--data", str(tmp_path), "--epochs", "1", "--output", str(out)]
    assert (
        main([*argv, "--model-arg", "in_chans=3", "--model-arg", "width=8", "--set", "data.img_size=16"]) == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == "multilabel" and config["data"]["test_split"] == "test"
    assert (out / "test_metrics.json").is_file() and recipe.is_file()


# --------------------------------------------------------------------------------------- load_run API
@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("api") / "run"
    sets = ["data.kwargs.num_samples={train: 64, val: 16, test: 16}", "data.batch_size=32", "train.epochs=1"]
    assert (
        main(["train", str(GLYPH), *[a for s in sets for a in ("--set", s)], "--set", f"output={out}"]) == 0
    )
    return out


def test_load_run_predicts_like_the_cli_and_returns_attention(glyph_run, tmp_path, capsys):
    canvas = np.zeros((64, 64), dtype=np.uint8)
    canvas[10:40, 20:26] = 255
    image = tmp_path / "bar.png"
    Image.fromarray(canvas).save(image)
    run = visattn.load_run(glyph_run)
    (api,) = run.predict([image], topk=3)
    assert (
        main(
            ["predict", str(GLYPH), str(image), "--checkpoint", str(glyph_run / "best.safetensors"), "--json"]
        )
        == 0
    )
    (cli,) = json.loads(capsys.readouterr().out)
    assert api["scores"] == pytest.approx(cli["scores"]) and len(api["top"]) == 3
    (maps,) = run.attention([image])
    score = maps["classifier.heads.0"]["score"]
    assert score.shape == (10, 8, 8)  # per class, on the 8 x 8 feature map of a 64 px canvas
    assert visattn.load_run(glyph_run / "best.safetensors").class_names == run.class_names


# ------------------------------------------------------------------------------- predict folders / files
def test_predict_folders_globs_and_results_files(glyph_run, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 64), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    results = tmp_path / "out.csv"
    ckpt = ["--checkpoint", str(glyph_run / "best.safetensors")]
    assert main(["predict", str(GLYPH), str(folder), *ckpt, "--results-file", str(results)]) == 0
    rows = list(csv.DictReader(results.open()))
    assert [Path(r["image"]).name for r in rows] == ["0.png", "1.png", "2.png"]
    assert set(rows[0]) == {"image", "labels", *[str(d) for d in range(10)]}
    assert (
        main(
            [
                "predict",
                str(GLYPH),
                str(folder / "[01].png"),
                *ckpt,
                "--results-file",
                str(tmp_path / "g.json"),
            ]
        )
        == 0
    )
    assert [Path(r["image"]).name for r in json.loads((tmp_path / "g.json").read_text())] == [
        "0.png",
        "1.png",
    ]
    assert main(["predict", str(GLYPH), str(tmp_path / "none*.png"), *ckpt]) == 2
    assert "matches no file" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ progress you see
def test_start_of_run_summary_and_eta(tmp_path, caplog):
    sets = ["data.kwargs.num_samples={train: 64, val: 16, test: 16}", "data.batch_size=16", "train.epochs=2"]
    argv = ["train", str(GLYPH), *[a for s in sets for a in ("--set", s)], "--set", "train.log_interval=2"]
    with caplog.at_level(logging.INFO, logger="visattn"):
        assert main([*argv, "--set", f"output={tmp_path / 'run'}"]) == 0
    text = [r.getMessage() for r in caplog.records]
    summary = next(m for m in text if m.startswith("run: csra"))
    assert "parameters" in summary and "10 classes" in summary and "2 epochs x 4 steps of batch 16" in summary
    steps = [m for m in text if " step " in m]
    assert (
        len(steps) == 4
        and all("ETA" in m for m in steps)
        and steps[-1].split("ETA ")[1].startswith("0:00:00")
    )


def test_list_layout_test_split_uses_the_training_vocabulary(tmp_path):
    """A list-layout test file naming fewer classes than training no longer builds its own (shorter,
    re-indexed) vocabulary: it is read with the training split's."""
    for i in range(3):
        _image(tmp_path / f"{i}.png", i)
    train = _csv(
        tmp_path / "train.csv",
        ["path", "positive"],
        [("0.png", "cat;dog"), ("1.png", "owl"), ("2.png", "dog")],
    )
    test = _csv(tmp_path / "test.csv", ["path", "positive"], [("2.png", "owl")])  # no cat, no dog
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "task: multilabel\nmodel: {name: glyphnet, kwargs: {in_chans: 3, width: 8}}\n"
        f"data: {{name: multilabel_csv, kwargs: {{files: {{train: {train}, test: {test}}}, encoding: binary}}, "
        "test_split: test, img_size: 16}\n"
    )
    data = build_datasets(load_config(recipe), ("train", "test"))
    assert data["train"].class_names == data["test"].class_names == ["cat", "dog", "owl"]
    torch.testing.assert_close(data["test"].targets, torch.tensor([[0.0, 0.0, 1.0]]))
