"""The real Fashion-MNIST of the Debian package ``dataset-fashion-mnist`` (skipped when it is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visattn.config import load_config
from visattn.data import create_dataset
from visattn.data.factory import FASHION_MNIST_DIR
from visattn.engine.build import build_datasets, build_model, build_task, num_classes_of

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist"

pytestmark = pytest.mark.skipif(
    not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)",
)


def test_official_split_and_statistics():
    train, test = create_dataset("fashion_mnist", "train"), create_dataset("fashion_mnist", "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert (
        train.targets.bincount().tolist() == [6000] * 10 and test.targets.bincount().tolist() == [1000] * 10
    )
    assert train.class_names[0] == "T-shirt/top" and train.class_names[9] == "Ankle boot"
    x = train.images.float() / 255  # the normalisation of configs/fashion_mnist/*.yaml
    assert x.mean().item() == pytest.approx(0.2860, abs=1e-4) and x.std().item() == pytest.approx(
        0.3530, abs=1e-4
    )


@pytest.mark.parametrize("recipe", ["san_small.yaml", "ran_small.yaml"])
def test_benchmark_recipes_run_on_the_real_data(recipe):
    torch.manual_seed(0)
    config = load_config(CONFIGS / recipe)
    data = build_datasets(config)
    model = build_model(config, num_classes_of(data["train"]))
    task = build_task(config, model, data["train"])
    batch = [data["train"][i] for i in range(4)]
    images, labels = torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])
    assert images.shape == (4, 1, config["data"]["img_size"], config["data"]["img_size"])
    loss = task.training_loss(model, (images, labels), 0)
    assert torch.isfinite(loss)
