"""The real-data segmentation recipes start from the CLI on fixture-sized data in the real formats."""

import pytest
from data_fixtures import cli_train
from test_data_cityscapes import make_cityscapes
from test_data_voc_seg import make_voc_seg

SMALL = [
    "--set",
    "data.batch_size=2",
    "--set",
    "data.eval_batch_size=1",
    "--set",
    "data.workers=0",
    "--set",
    "train.epochs=1",
]


def run(recipe, root, out, *extra):
    return cli_train(f"configs/{recipe}", out, *SMALL, "--set", f"data.kwargs.root={root}", *extra)[0]


def test_cityscapes_recipe_with_a_small_hrnet(tmp_path):
    # the recipe's task, transforms (scale, crop, flip), class weights, optimiser and poly schedule; W18-small
    # instead of W48 and 32-pixel windows instead of 1024×2048 images
    row = run(
        "psa_cityscapes_hrnet_w48.yaml", make_cityscapes(tmp_path / "city"), tmp_path / "run",
        "--set", "model.name=psa_seg_hrnet_w18_small", "--set", "task_kwargs.crop_size=[32, 32]",
        "--set", "task_kwargs.base_size=[16, 32]", "--set", "task_kwargs.inference=slide",
        "--set", "task_kwargs.window=[32, 32]", "--set", "task_kwargs.stride=[16, 16]",
    )  # fmt: skip
    assert 0.0 <= float(row["mIoU"]) <= 1.0 and "IoU.road" in row


@pytest.mark.slow
@pytest.mark.parametrize("model", ["psa_seg_hrnet_w48", "seg_hrnet_w48"])
def test_cityscapes_recipe_as_written(tmp_path, model):
    row = run(
        "psa_cityscapes_hrnet_w48.yaml", make_cityscapes(tmp_path / "city"), tmp_path / "run",
        "--set", f"model.name={model}", "--set", "task_kwargs.crop_size=[64, 64]",
        "--set", "task_kwargs.base_size=[32, 64]", "--set", "task_kwargs.inference=slide",
        "--set", "task_kwargs.window=[64, 64]", *([] if model.startswith("psa") else ["--set", "model.kwargs={}"]),
    )  # fmt: skip
    assert 0.0 <= float(row["mIoU"]) <= 1.0


@pytest.mark.slow
def test_voc_recipe(tmp_path):
    row = run(
        "psa_voc2012_deeplabv3_r50.yaml", make_voc_seg(tmp_path / "voc"), tmp_path / "run",
        "--set", "task_kwargs.crop_size=[32, 32]", "--set", "task_kwargs.base_size=[32, 64]",
        "--set", "task_kwargs.eval_pad_to=[32, 32]",
    )  # fmt: skip
    assert 0.0 <= float(row["mIoU"]) <= 1.0 and "IoU.aeroplane" in row
