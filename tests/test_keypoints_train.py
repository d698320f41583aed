"""The canvas keypoint recipes train from the CLI and improve over their first epoch (tiny settings)."""

import importlib.util

import pytest
from data_fixtures import cli_train

pytest.importorskip("mlxtend")

from visattn.cli import main  # noqa: E402

HAS_COCOEVAL = importlib.util.find_spec("pycocotools") is not None
METRIC = "AP" if HAS_COCOEVAL else "PCK"
TINY = [
    "--set", "data.kwargs.num_samples={train: 64, val: 24, test: 24}", "--set", "data.batch_size=16",
    "--set", "train.epochs=4", "--set", "sched.warmup_epochs=0", "--set", "model.kwargs.width=16",
    "--set", f"eval.metric={METRIC}",
]  # fmt: skip


@pytest.mark.parametrize("recipe", ["configs/psa_glyph_pose.yaml", "configs/psa_glyph_pose_nopsa.yaml"])
def test_canvas_keypoint_recipe_trains_and_improves(tmp_path, recipe):
    out = tmp_path / "run"
    rows = cli_train(recipe, out, *TINY)
    assert len(rows) == 4
    pck = [float(r["PCK"]) for r in rows]
    assert max(pck[1:]) > pck[0] and float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    if HAS_COCOEVAL:
        ap = [float(r["AP"]) for r in rows]
        assert max(ap[1:]) > ap[0] and all(0.0 <= a <= 1.0 for a in ap)
    assert (out / "best.safetensors").is_file()


def test_cli_on_a_fixture_sized_coco_keypoints_file(tmp_path):
    from test_data_coco_keypoints import make_coco_keypoints

    root = make_coco_keypoints(tmp_path / "coco")
    out = tmp_path / "run"
    sets = [
        "--set", "data.name=coco_keypoints",
        "--set", f"data.kwargs={{root: '{root}'}}", "--set", "data.train_split=val", "--set", "data.val_split=val", "--set", "data.test_split=null",
        "--set", "model.kwargs={in_chans: 3, width: 8}", "--set", "data.mean=[0.5, 0.5, 0.5]",
        "--set", "data.std=[0.25, 0.25, 0.25]", "--set", "data.batch_size=2", "--set", "train.epochs=1",
        "--set", "task_kwargs.input_size=[64, 48]", "--set", "task_kwargs.heatmap_size=[32, 24]",
        "--set", f"eval.metric={METRIC}",
    ]  # fmt: skip
    row = cli_train("configs/psa_glyph_pose.yaml", out, *sets)[0]
    assert row["instances"] == "2" and 0.0 <= float(row[METRIC]) <= 1.0
    bad = ["train", "configs/psa_glyph_pose.yaml", *sets, "--set", "task_kwargs.heatmap_size=[16, 12]",
           "--set", f"output={tmp_path / 'bad'}"]  # fmt: skip
    assert main(bad) == 2  # heatmap size not the model's output size: a clear error, not a broadcast
