"""Errors a user can act on, and a run log that is never lost (each case failed on the earlier main).

* recipe mistakes stop before the first training step with the key named (ranges, choices, metric names,
  model and dataset keyword typos with the closest valid name);
* damaged or mismatched weight files give one error naming the file in eval, predict, visualize, export and
  ``--resume``; non-finite weights are refused unless ``--allow-nonfinite``;
* ``log.csv`` is rebuilt from the checkpointed history (a kill between the checkpoint and the log row loses
  nothing), a second ``train`` into a used folder refuses unless ``--resume`` / ``--overwrite``, and
  temporaries of an interrupted write are removed;
* divergence (loss, gradients, parameters or BatchNorm statistics non-finite) ends with "training diverged
  at epoch N, step S", exit status 3, no traceback, and only finite checkpoints kept.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from visattn.cli import main
from visattn.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
GLYPH = ROOT / "configs" / "glyph_canvas_csra.yaml"
TINY = ["data.kwargs.num_samples={train: 48, val: 16, test: 16}", "data.batch_size=16", "train.epochs=1"]


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def log_epochs(run: Path) -> list[int]:
    with (run / "log.csv").open() as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One finished 2-epoch run of the canvases (weights to damage, a folder to train into again)."""
    out = tmp_path_factory.mktemp("errors") / "run"
    assert main(["train", str(GLYPH), *sets(*TINY, "train.epochs=2", f"output={out}")]) == 0
    return out


# ------------------------------------------------------------------------------------------------ recipes
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", "'train.epochs': expected a value >= 1"),
        ("train.epochs=-1", "'train.epochs': expected a value >= 1"),
        ("eval.every=0", "'eval.every': expected a value >= 1"),
        ("data.img_size=0", "'data.img_size': expected a value >= 1"),
        ("train.amp_dtype=float99", "'train.amp_dtype': expected one of ['bfloat16', 'float16']"),
        ("data.batch_size=2.5", "'data.batch_size': expected an integer"),
        ("data.val_fraction=1.5", "'data.val_fraction': expected a value in (0, 1)"),
        ("data.std=[0.0]", "'data.std': every value must be > 0"),
        ("data.channels=2", "'data.channels': expected one of"),
    ],
)
def test_recipe_values_are_checked_when_the_recipe_loads(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(GLYPH, [override])


def test_exponent_floats_are_numbers_in_recipe_files(tmp_path):
    """YAML 1.1 (PyYAML's default) reads ``1e-3`` as a string, so these valid values were rejected."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"_base_: {GLYPH}\noptim: {{lr: 1e-3, weight_decay: 5e-4}}\n"
        "sched: {warmup_lr: 1e-6, min_lr: 1e-5}\ntrain: {ema_decay: 9.998e-1}\n"
    )
    config = load_config(recipe)
    assert (config["optim"]["lr"], config["optim"]["weight_decay"]) == (0.001, 0.0005)
    assert (config["sched"]["warmup_lr"], config["sched"]["min_lr"], config["train"]["ema_decay"]) == (
        1e-6,
        1e-5,
        0.9998,
    )


def test_valid_values_are_accepted():
    config = load_config(
        GLYPH,
        [
            "optim.lr=1e-3",
            "train.keep_checkpoints=null",
            "eval.threshold=1",
            "optim.clip_grad=0",
            "data.workers=0",
        ],
    )
    assert config["optim"]["lr"] == 0.001 and config["train"]["keep_checkpoints"] is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("eval.metric=mAp", "'eval.metric': 'mAp' is not a metric of task 'multilabel' (did you mean 'mAP'"),
        ("model.kwargs.lamda=0.2", "model 'csra' has no option 'lamda' (did you mean 'lam'?)"),
        ("data.kwargs.num_sample=3", "dataset 'glyph_canvas' (data.kwargs) has no option 'num_sample'"),
    ],
)
def test_build_errors_stop_before_the_first_step(override, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", str(GLYPH), *sets(*TINY, override, f"output={out}")]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "log.csv").exists() and not (out / "checkpoints").exists()


# ------------------------------------------------------------------------------------------- weight files
def _damaged(run: Path, tmp_path: Path) -> dict[str, Path]:
    good = run / "best.safetensors"
    weights = load_file(str(good))
    files = {}
    files["truncated"] = tmp_path / "truncated.safetensors"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["not safetensors"] = tmp_path / "text.safetensors"
    files["not safetensors"].write_text("not weights")
    key = next(k for k in weights if k.endswith("weight") and weights[k].dim() == 4)
    files["wrong shape"] = tmp_path / "shape.safetensors"
    save_file({**weights, key: torch.zeros(1, 1, 1, 1)}, str(files["wrong shape"]))
    files["missing key"] = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in weights.items() if k != key}, str(files["missing key"]))
    return files


EXPECTED = {
    "truncated": "not a readable safetensors file",
    "not safetensors": "not a readable safetensors file",
    "wrong shape": "do not fit the model",
    "missing key": "do not fit the model",
}


def test_damaged_weight_files_name_the_file_in_every_command(run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (64, 64)).save(image)
    for damage, path in _damaged(run, tmp_path).items():
        commands = {
            "eval": ["eval", str(GLYPH), "--checkpoint", str(path), *sets(*TINY)],
            "predict": ["predict", str(GLYPH), str(image), "--checkpoint", str(path)],
            "visualize": ["visualize", str(image), "--checkpoint", str(path), "--config", str(GLYPH), "--out", str(tmp_path / "v")],
            "export": ["export", str(path), "--config", str(GLYPH), "--out", str(tmp_path / "m.onnx"), "--no-check"],
        }  # fmt: skip
        for name, argv in commands.items():
            assert main(argv) == 2, (damage, name)
            err = capsys.readouterr().err
            assert str(path) in err and EXPECTED[damage] in err, (damage, name, err)


def test_resume_from_a_damaged_checkpoint_names_it(run, tmp_path, capsys):
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    for f in (run / "checkpoints").iterdir():
        (copy / "checkpoints" / f.name).write_bytes(f.read_bytes())
    latest = copy / "checkpoints" / "epoch_0002.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])
    argv = ["train", str(GLYPH), *sets(*TINY, "train.epochs=3", f"output={copy}"), "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(latest) in err and "not a readable safetensors file" in err
    state = copy / "checkpoints" / "epoch_0002.state.pt"
    state.write_bytes(b"garbage")
    assert main(["eval", str(GLYPH), "--checkpoint", str(state), *sets(*TINY)]) == 2
    assert "training-state file" in capsys.readouterr().err


def test_non_finite_weights_are_refused_unless_asked(run, tmp_path, capsys):
    weights = load_file(str(run / "best.safetensors"))
    key = next(k for k in weights if k.endswith("weight"))
    weights[key] = weights[key].clone()
    weights[key].view(-1)[0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(weights, str(bad))
    out = tmp_path / "m.onnx"
    export = [
        "export",
        str(bad),
        "--config",
        str(GLYPH),
        "--out",
        str(out),
        "--no-check",
        "--exporter",
        "legacy",
    ]
    assert main(export) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "non-finite" in err and key in err and not out.exists()
    assert main([*export, "--allow-nonfinite"]) == 0 and out.is_file()


def test_pretrained_file_that_does_not_fit_names_the_file(run, tmp_path):
    import visattn

    weights = load_file(str(run / "best.safetensors"))
    partial = tmp_path / "partial.safetensors"
    dropped = next(k for k in weights if k.startswith("backbone.") and k.endswith(".weight"))
    # A classifier of another shape is the one listed opt-out (warned, heads stay fresh, as timm does); any
    # other missing key is an error naming the file.
    save_file({k: v for k, v in weights.items() if k != dropped and not k.startswith("ema.")}, str(partial))
    with pytest.raises(ValueError, match="partial.safetensors: the weights do not fit model 'csra'"):
        visattn.create_model(
            "csra", backbone="glyphnet", in_chans=1, pretrained=True, pretrained_file=partial
        )


# ------------------------------------------------------------------------------------------------ run log
def test_log_is_rebuilt_from_the_checkpoint_history(tmp_path):
    out = tmp_path / "run"
    assert main(["train", str(GLYPH), *sets(*TINY, "train.epochs=2", f"output={out}")]) == 0
    # A kill after epoch 2's checkpoint but before its log row: the file still ends at epoch 1.
    lines = (out / "log.csv").read_text().splitlines()
    (out / "log.csv").write_text("\n".join(lines[:2]) + "\n")
    (out / "checkpoints" / "epoch_0003.safetensors.tmp").write_bytes(b"half a file")  # an interrupted write
    assert main(["train", str(GLYPH), *sets(*TINY, "train.epochs=3", f"output={out}"), "--resume"]) == 0
    assert log_epochs(out) == [1, 2, 3]
    assert not list((out / "checkpoints").glob("*.tmp"))


def test_a_used_output_folder_needs_resume_or_overwrite(run, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", str(GLYPH), *sets(*TINY, f"output={out}")]
    assert main(argv) == 0
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert log_epochs(out) == [1]
    assert main([*argv, "--overwrite"]) == 0
    assert log_epochs(out) == [1]  # the new run alone, not 1, 1


# ------------------------------------------------------------------------------------------- divergence
def test_divergence_stops_cleanly_and_keeps_the_finite_checkpoint(tmp_path):
    out = tmp_path / "run"
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    # Epoch 1 trains at the warm-up lr; epoch 2 at lr 1e30 overflows.
    schedule = [
        "sched.step_on_epochs=true",
        "sched.warmup_epochs=1",
        "sched.warmup_lr=0.0003",
        "optim.lr=1e30",
    ]
    argv = [*sets(*TINY, "train.epochs=3", *schedule, f"output={out}"), "--overwrite"]
    done = subprocess.run(
        [sys.executable, "-m", "visattn.cli", "train", str(GLYPH), *argv],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 3, done.stderr
    assert "training diverged at epoch 2, step" in done.stderr and "Traceback" not in done.stderr
    assert "epoch_0001.safetensors" in done.stderr  # the last finite checkpoint is named
    assert (out / "checkpoints" / "last.txt").read_text().strip() == "epoch_0001"
    best = load_file(str(out / "best.safetensors"))
    assert all(torch.isfinite(v).all() for v in best.values())
    assert log_epochs(out) == [1]


def test_non_finite_batchnorm_statistics_are_never_saved(tmp_path):
    from visattn.engine.build import build_trainer
    from visattn.engine.trainer import TrainingDivergedError

    out = tmp_path / "run"
    config = load_config(GLYPH, [*TINY, "train.epochs=2", f"output={out}"])
    trainer = build_trainer(config)
    trainer.fit(until_epoch=1)
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    # An overflow the training loss does not show (train mode normalises with batch statistics).
    def overflow(module, args, output) -> None:
        module.running_var.data.fill_(float("inf"))  # .data: outside autograd's version check

    bn.register_forward_hook(overflow)
    with pytest.raises(
        TrainingDivergedError, match="training diverged in epoch 2: model tensor .*running_var"
    ):
        trainer.fit(resume="auto")
    assert (out / "checkpoints" / "last.txt").read_text().strip() == "epoch_0001"
    best = load_file(str(out / "best.safetensors"))
    assert all(torch.isfinite(v).all() for v in best.values())
