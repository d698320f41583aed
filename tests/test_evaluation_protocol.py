"""Honest evaluation from the command line (CLI runs in a subprocess on small fixture data).

* a recipe without ``data.val_split`` selects on a seeded held-out part of the training split, and the test
  split is scored once at the end with the best weights (``test_metrics.json`` names the split);
* ``visattn eval --residual-attention λ`` equals the Python API's training-free trick, ``--sweep-lambda``
  prints one row per λ;
* ``eval`` without weights fails with a message unless ``--random-init``; a ``.state.pt`` file is named as
  a training state; ``--output`` writes per-class values and class names (JSON and CSV);
* grey models on RGB files: ``in_chans: 1`` converts the images (``data.channels``), a disagreement is one
  clear error.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from visattn.config import load_config
from visattn.data import HeldOut, holdout_indices
from visattn.engine.build import build_datasets

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("red", "green", "blue")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visattn.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )


def _photos(root: Path, split: str, n: int, seed: int) -> Path:
    """``n`` 20x20 RGB images; class c is present when colour channel c has a bright square."""
    rng = np.random.default_rng(seed)
    lines = ["path," + ",".join(CLASSES)]
    for i in range(n):
        labels = rng.integers(0, 2, 3)
        if not labels.any():
            labels[i % 3] = 1
        image = rng.integers(0, 40, (20, 20, 3)).astype(np.uint8)
        for c in np.flatnonzero(labels):
            y, x = rng.integers(0, 12, 2)
            image[y : y + 8, x : x + 8, c] = 230
        path = root / split / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        lines.append(f"{split}/{i:03d}.png," + ",".join(str(int(v)) for v in labels))
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root / f"{split}.csv"


def _recipe(tmp_path: Path, **model_kwargs) -> Path:
    data = tmp_path / "data"
    files = {
        split: str(_photos(data, split, n, seed)) for split, n, seed in (("train", 40, 0), ("test", 12, 1))
    }
    recipe = {
        "task": "multilabel",
        "model": {"name": "glyphnet", "kwargs": {"width": 8, "in_chans": 3, **model_kwargs}},
        "data": {
            "name": "multilabel_csv",
            "kwargs": {"files": files, "encoding": "binary"},
            "test_split": "test",  # no val_split: selection on a held-out part of train
            "img_size": 20,
            "train_transform": "flip",
            "batch_size": 8,
        },
        "optim": {"name": "adamw", "lr": 0.01},
        "sched": {"name": "cosine"},
        "train": {"epochs": 2},
        "output": str(tmp_path / "run"),
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_holdout_indices_are_seeded_disjoint_and_complete():
    kept, held = holdout_indices(50, 0.1, seed=3)
    assert len(held) == 5 and sorted(kept + held) == list(range(50))
    assert holdout_indices(50, 0.1, seed=3) == (kept, held) and holdout_indices(50, 0.1, seed=4)[1] != held
    with pytest.raises(ValueError, match="val_fraction"):
        holdout_indices(50, 1.0, seed=0)


def test_selection_never_uses_the_test_split_by_default(tmp_path):
    recipe = _recipe(tmp_path)
    config = load_config(recipe)
    assert config["data"]["val_split"] is None and config["data"]["val_fraction"] == 0.1
    data = build_datasets(config, ("train", "val", "test"))
    assert isinstance(data["val"], HeldOut) and isinstance(data["train"], HeldOut)
    assert data["val"].dataset.paths == data["train"].dataset.paths  # both parts of the training split
    assert not set(data["val"].indices) & set(data["train"].indices)
    assert len(data["val"]) == 4 and len(data["train"]) == 36
    test_paths = set(data["test"].paths)
    assert not test_paths & {data["val"].dataset.paths[i] for i in data["val"].indices}
    # the held-out targets are the training split's rows, sliced
    torch.testing.assert_close(data["val"].targets, data["val"].dataset.targets[data["val"].indices])

    done = run_cli("train", str(recipe))
    assert done.returncode == 0, done.stderr
    assert "held out" in done.stderr and "test split 'test'" in done.stderr
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert test["split"] == "split 'test'" and test["num_samples"] == 12
    assert "best.safetensors" in test["weights"]
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert {int(float(r["num_samples"])) for r in rows} == {4}  # per-epoch figures: the held-out 4 samples

    # `eval` defaults to the test split and repeats the end-of-training figure exactly.
    out = tmp_path / "eval.json"
    done = run_cli("eval", str(recipe), "--checkpoint", "best", "--output", str(out))
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["split"] == "split 'test'" and record["mAP"] == pytest.approx(test["mAP"], abs=1e-7)
    assert record["class_names"] == list(CLASSES) and len(record["AP"]) == 3  # per-class values kept


def test_eval_needs_weights_and_names_training_state_files(tmp_path):
    recipe = _recipe(tmp_path)
    done = run_cli("eval", str(recipe))
    assert done.returncode == 2 and "--random-init" in done.stderr and "Traceback" not in done.stderr
    done = run_cli("eval", str(recipe), "--random-init", "--split", "val")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["split"].startswith("0.1 of split 'train' held out")

    assert run_cli("train", str(recipe), "--set", "train.epochs=1").returncode == 0
    state = tmp_path / "run" / "checkpoints" / "epoch_0001.state.pt"
    done = run_cli("eval", str(recipe), "--checkpoint", str(state))
    assert done.returncode == 2 and "training-state file" in done.stderr
    assert "epoch_0001.safetensors" in done.stderr and "Traceback" not in done.stderr


def test_residual_attention_command_equals_the_python_api(tmp_path):
    from visattn.inference import evaluate, load_trained_model
    from visattn.models import residual_attention

    recipe = _recipe(tmp_path)
    assert run_cli("train", str(recipe)).returncode == 0
    out = tmp_path / "trick.json"
    done = run_cli(
        "eval", str(recipe), "--checkpoint", "best", "--residual-attention", "0.5", "--output", str(out)
    )
    assert done.returncode == 0, done.stderr
    cli = json.loads(out.read_text())
    loaded = load_trained_model(tmp_path / "run" / "best.safetensors")
    api = evaluate(loaded, "test", model=residual_attention(loaded.model, 0.5))
    assert cli["lambda"] == 0.5 and cli["mAP"] == pytest.approx(api["mAP"], abs=1e-7)
    assert cli["AP"] == pytest.approx(api["AP"].tolist(), nan_ok=True)
    plain = evaluate(loaded, "test")
    assert abs(cli["mAP"] - plain["mAP"]) > 0 or cli["CF1"] != plain["CF1"]  # the trick changed the scores

    table = tmp_path / "sweep.csv"
    done = run_cli(
        "eval", str(recipe), "--checkpoint", "best", "--sweep-lambda", "0,0.5", "--output", str(table)
    )
    assert done.returncode == 0, done.stderr
    assert "| 0 |" in done.stdout and "| 0.5 |" in done.stdout
    rows = list(csv.DictReader(table.open()))
    assert [(r["lambda"], r["class"]) for r in rows] == [(lam, c) for lam in ("0.0", "0.5") for c in CLASSES]
    by_class = {r["class"]: float(r["AP"]) for r in rows if r["lambda"] == "0.5"}
    assert [by_class[c] for c in CLASSES] == pytest.approx(api["AP"].tolist())
    # λ = 0 is the GAP model itself (exact for CNNs)
    zero = [r for r in rows if r["lambda"] == "0.0"][0]
    assert float(zero["mAP"]) == pytest.approx(plain["mAP"], abs=1e-6)


def test_grey_model_on_rgb_files_and_channel_mismatch(tmp_path):
    recipe = _recipe(tmp_path, in_chans=1)
    config = load_config(recipe, ["data.mean=[0.2]", "data.std=[0.3]"])
    x, *_ = build_datasets(config, ("test",))["test"][0]
    assert x.shape == (1, 20, 20)  # RGB files converted by luma before normalisation
    done = run_cli("train", str(recipe), "--set", "data.mean=[0.2]", "--set", "data.std=[0.3]")
    assert done.returncode == 0, done.stderr
    done = run_cli(
        "eval", str(recipe), "--checkpoint", "best", "--set", "data.mean=[0.2]", "--set", "data.std=[0.3]"
    )
    assert done.returncode == 0, done.stderr and json.loads(done.stdout)["num_samples"] == 12

    done = run_cli("train", str(recipe), "--set", "data.channels=3")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "data.channels" in done.stderr and "takes 1 channels" in done.stderr
    done = run_cli("train", str(recipe), "--set", "data.channels=2")
    assert done.returncode == 2 and "data.channels" in done.stderr


def test_threads_option_sets_torch_threads(tmp_path):
    from visattn.cli import main

    before = torch.get_num_threads()
    try:
        assert main(["info", "glyphnet", "--threads", "1", "--json"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert main(["info", "glyphnet", "--threads", "0"]) == 2
