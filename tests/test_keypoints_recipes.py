"""The COCO keypoint recipes start from the CLI on a fixture-sized person-keypoints file."""

import importlib.util

import pytest
from data_fixtures import cli_train
from test_data_coco_keypoints import make_coco_keypoints

METRIC = "AP" if importlib.util.find_spec("pycocotools") else "PCK"
SMALL = [
    "--set", "data.batch_size=2", "--set", "data.workers=0", "--set", "train.epochs=1",
    "--set", "data.train_split=val", "--set", f"eval.metric={METRIC}",
]  # fmt: skip


def run(recipe, tmp_path, *extra):
    root = make_coco_keypoints(tmp_path / "coco")
    return cli_train(
        f"configs/{recipe}", tmp_path / "run", *SMALL, "--set", f"data.kwargs.root={root}", *extra
    )[0]


def test_simplebaseline_recipe_with_a_small_resnet(tmp_path):
    row = run(
        "psa_coco_simplebaseline_r50.yaml", tmp_path, "--set", "model.name=psa_simplebaseline_resnet18",
        "--set", "task_kwargs.input_size=[64, 64]", "--set", "task_kwargs.heatmap_size=[16, 16]",
        "--set", "task_kwargs.sigma=1.0", "--set", "task_kwargs.blur_kernel=5",
    )  # fmt: skip
    assert row["instances"] == "2" and 0.0 <= float(row[METRIC]) <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize(
    "recipe", ["psa_coco_simplebaseline_r50.yaml", "psa_coco_hrnet_w32.yaml", "psa_coco_hrnet_w48.yaml"]
)
def test_coco_recipes_as_written(tmp_path, recipe):
    row = run(
        recipe,
        tmp_path,
        "--set",
        "task_kwargs.input_size=[128, 96]",
        "--set",
        "task_kwargs.heatmap_size=[32, 24]",
    )
    assert row["instances"] == "2" and 0.0 <= float(row[METRIC]) <= 1.0
