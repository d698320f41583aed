"""PA-100K loader on a tiny annotation.mat with the 7 top-level variables."""

import numpy as np
import pytest
import scipy.io
import torch
from data_fixtures import cellstr, pa100k_mat, write_image

from visattn.data._common import AnnotationError
from visattn.data.pa100k import PA100K, PA100K_ATTRIBUTES


def _numeric_cell():
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = np.array([[7.0]])
    return cell


def test_splits_and_name_decoding(tmp_path):
    mat = pa100k_mat(tmp_path)
    sizes = {s: len(PA100K(tmp_path, s)) for s in ("train", "val", "test", "trainval")}
    assert sizes == {"train": 3, "val": 2, "test": 1, "trainval": 5}
    val = PA100K(tmp_path, "val")
    assert val.names == ["000004.jpg", "000005.jpg"] and val.class_names == list(PA100K_ATTRIBUTES)
    assert torch.equal(val.targets, torch.from_numpy(mat["val_label"]).float()) and val.masks.all()
    tv = PA100K(tmp_path, "trainval")
    assert torch.equal(
        tv.targets, torch.from_numpy(np.concatenate([mat["train_label"], mat["val_label"]])).float()
    )
    assert torch.allclose(tv.positive_ratio(), tv.targets.mean(0))
    write_image(tmp_path / "data" / "000006.jpg", 1)
    image, target, mask, index = PA100K(tmp_path, "test")[0]
    assert image.shape == (3, 16, 16) and target.shape == (26,) and index == 0


@pytest.mark.parametrize(
    ("override", "split", "message"),
    [
        ({"val_label": np.ones((3, 26), np.uint8)}, "val", r"val_label: expected shape \(2, 26\)"),
        ({"train_label": np.full((3, 26), 2, np.uint8)}, "train", r"train_label: label 2 at row 0, column 0"),
        ({"attributes": cellstr(["a", "b"])}, "test", r"test_label: expected shape \(1, 2\)"),
        (
            {"val_images_name": cellstr(["000001.jpg", "000005.jpg"])},
            "trainval",
            r"duplicate image name '000001\.jpg'",
        ),
        (
            {"test_images_name": np.zeros((1, 1))},
            "test",
            r"test_images_name: expected an n x 1 or 1 x n cell",
        ),
        ({"test_images_name": _numeric_cell()}, "test", r"test_images_name\[0\]: expected a string"),
    ],
)
def test_malformed(tmp_path, override, split, message):
    pa100k_mat(tmp_path, **override)
    with pytest.raises(AnnotationError, match=message) as err:
        PA100K(tmp_path, split)
    assert "annotation.mat" in str(err.value)


def test_missing_variable_and_split(tmp_path):
    mat = pa100k_mat(tmp_path)
    del mat["test_label"]
    scipy.io.savemat(tmp_path / "annotation.mat", mat)
    with pytest.raises(AnnotationError, match=r"annotation\.mat, test_label: missing variable"):
        PA100K(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        PA100K(tmp_path, "gallery")
