"""The `visattn` command line: models, info, convert, train / eval / predict / resume on built-in data."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import visattn
from visattn.cli import main
from visattn.models.convert import convert_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "glyph_canvas_csra.yaml"
TINY = [
    "data.kwargs.num_samples={train: 96, val: 32, test: 48}",
    "data.batch_size=32",
    "train.epochs=1",
]


def test_models_lists_every_registered_model(capsys):
    assert main(["models"]) == 0
    assert capsys.readouterr().out.split() == visattn.list_models()
    assert main(["models", "san15*"]) == 0
    assert capsys.readouterr().out.split() == ["san15_pairwise", "san15_patchwise"]
    assert main(["models", "nothing*"]) == 1


def test_info_reports_published_counts(capsys):
    assert main(["info", "san10_pairwise", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == 10_531_848 and info["ops_convention"] == "san"
    assert abs(info["ops"] / 1e9 - 2.155) < 1e-3
    assert [d["reduction"] for d in info["feature_info"]] == [2, 4, 8, 16, 32]
    assert main(["info", "glyphnet", "--img-size", "32"]) == 0
    out = capsys.readouterr().out
    assert "251,178" in out and "32x32" in out and "'macs'" in out


def test_info_unknown_model_is_a_clean_error(capsys):
    assert main(["info", "no_such_model"]) == 2
    assert "unknown visattn model" in capsys.readouterr().err


def test_convert_san_official_file(tmp_path, capsys):
    model = visattn.create_model("san10_pairwise", layers=[1, 1, 1, 1, 1], kernels=[3] * 5, num_classes=5)
    official = {f"module.{k}": v for k, v in model.official_state_dict().items()}
    src, dst = tmp_path / "official.pth", tmp_path / "converted.safetensors"
    torch.save({"epoch": 3, "state_dict": official}, src)
    assert (
        main(
            [
                "convert",
                "--from",
                "san-official",
                str(src),
                str(dst),
                "--set",
                "allow_custom=True",
                "--set",
                "kernels=[3, 3, 3, 3, 3]",
            ]
        )
        == 0
    )
    assert "loads it strictly" in capsys.readouterr().out
    converted = (
        convert_checkpoint("san-official", official, allow_custom=True, kernels=[3] * 5).build().eval()
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model.eval()(x))
    reloaded = visattn.create_model(
        "san10_pairwise", layers=[1, 1, 1, 1, 1], kernels=[3] * 5, num_classes=5, checkpoint_path=dst
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x))


def test_train_eval_predict_resume_on_builtin_data(tmp_path, capsys):
    out = tmp_path / "run"
    overrides = [*TINY, f"output={out}"]
    assert main(["train", str(RECIPE), *sum((["--set", o] for o in overrides), [])]) == 0
    assert (out / "checkpoints" / "epoch_0001.safetensors").is_file() and (out / "best.safetensors").is_file()
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,") and len(log) == 2

    # Resume: a second epoch continues from the first (epoch counter and log carry on).
    resume_set = [*sum((["--set", o] for o in overrides), []), "--set", "train.epochs=2"]
    assert main(["train", str(RECIPE), *resume_set, "--resume"]) == 0
    assert len((out / "log.csv").read_text().splitlines()) == 3
    assert (out / "checkpoints" / "last.txt").read_text().strip() == "epoch_0002"

    capsys.readouterr()
    metrics_file = tmp_path / "metrics.json"
    eval_args = [
        "eval",
        str(RECIPE),
        "--checkpoint",
        str(out / "best.safetensors"),
        "--output",
        str(metrics_file),
    ]
    assert main([*eval_args, *sum((["--set", o] for o in TINY), [])]) == 0
    metrics = json.loads(metrics_file.read_text())
    assert 0 < metrics["mAP"] <= 1 and metrics["num_samples"] == 48

    image = tmp_path / "canvas.png"
    canvas = torch.zeros(64, 64, dtype=torch.uint8)
    canvas[20:40, 28:34] = 255  # a bar: whatever the model says, predict must run and be well-formed
    Image.fromarray(canvas.numpy()).save(image)
    capsys.readouterr()
    assert (
        main(["predict", str(RECIPE), str(image), "--checkpoint", str(out / "best.safetensors"), "--json"])
        == 0
    )
    (result,) = json.loads(capsys.readouterr().out)
    assert set(result["scores"]) == {str(d) for d in range(10)}
    assert all(0 <= s <= 1 for s in result["scores"].values()) and len(result["top"]) == 5


def test_bad_recipe_key_names_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("_base_: " + str(RECIPE) + "\noptim: {lr: fast}\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "optim.lr" in err and "number" in err


@pytest.mark.parametrize("missing", ["nope.yaml"])
def test_missing_recipe(missing, capsys):
    assert main(["train", missing]) == 2
    assert "does not exist" in capsys.readouterr().err
