"""RAP v1 (positional struct fields) and v2 (named fields) loaders."""

import numpy as np
import pytest
import scipy.io
import torch
from data_fixtures import rap1_mat, rap2_mat, write_image

from visattn.data._common import AnnotationError
from visattn.data.rap import RAPv1, RAPv2


def test_v1_positional_fields_and_uncertain(tmp_path):
    fx = rap1_mat(tmp_path)
    ref = scipy.io.loadmat(tmp_path / "RAP_annotation" / "RAP_annotation.mat")["RAP_annotation"]
    trainval = ref[0][0][0][2][0][0][0][0][0, :] - 1  # dangweili's indexing expression
    ds = RAPv1(tmp_path, "trainval", partition=2)
    assert ds.rows.tolist() == trainval.tolist() == (fx["splits"][2][0] - 1).tolist()
    assert ds.class_names == fx["names"][:51] and ds.labels.shape == (3, 51)
    assert ds.image_names == [fx["image_names"][r] for r in ds.rows]
    raw = fx["labels"][ds.rows][:, :51]
    assert torch.equal(
        ds.labels, torch.from_numpy(np.select([raw == 1, raw == 2], [1, 0], -1)).to(torch.int8)
    )
    everything = RAPv1(tmp_path, attributes="all", indices=range(5))
    assert everything.labels[1, 3] == 0 and not everything.masks[1, 3] and everything.targets[1, 3] == 0
    assert everything.labels.shape == (5, 53)
    assert len(RAPv1(tmp_path, "test", partition=4)) == 2
    assert torch.allclose(everything.positive_ratio(), torch.from_numpy((fx["labels"] == 1).mean(0)).float())
    with pytest.raises(ValueError, match="split must be one of"):
        RAPv1(tmp_path, "train")


def test_v2_named_fields_selected_one_based(tmp_path):
    fx = rap2_mat(tmp_path)
    for p in (0, 3):
        train = RAPv2(tmp_path, "train", partition=p)
        assert train.rows.tolist() == (fx["splits"][p][0] - 1).tolist()
    ds = RAPv2(tmp_path, "trainval", partition=3)
    assert ds.class_names == ["a2", "a0", "a4"]  # selected_attribute [3, 1, 5], 1-based
    raw = fx["labels"][ds.rows][:, [2, 0, 4]]
    assert torch.equal(ds.masks, torch.from_numpy(raw != 2))
    assert torch.equal(ds.targets, torch.from_numpy(raw == 1).float())
    row0 = RAPv2(tmp_path, indices=[0], attributes="all")
    assert row0.labels[0, 2] == 0 and row0.class_names == fx["names"]
    write_image(tmp_path / "RAP_dataset" / fx["image_names"][0], 2)
    image, target, mask, index = RAPv2(tmp_path, indices=[0], train_ignore_value=0.5)[0]
    assert image.shape == (3, 16, 16) and target[0] == 0.5 and not mask[0]


def test_errors(tmp_path):
    labels = np.zeros((5, 53))
    labels[4, 52] = 3
    rap1_mat(tmp_path, labels=labels)
    RAPv1(tmp_path)  # column 52 is not evaluated
    with pytest.raises(
        AnnotationError, match=r"RAP_annotation field 1 \(labels\): label 3\.0 at row 4, column 52"
    ):
        RAPv1(tmp_path, attributes="all", indices=[0, 4])
    rap2_mat(tmp_path / "v2", drop="selected_attribute")
    with pytest.raises(
        AnnotationError,
        match=r"RAP_annotation\.mat, RAP_annotation: struct has no field 'selected_attribute'",
    ):
        RAPv2(tmp_path / "v2")
    with pytest.raises(FileNotFoundError, match=r"RAP_annotation\.mat"):
        RAPv2(tmp_path / "nowhere")
    rap2_mat(tmp_path / "v2b", n=6)
    path = tmp_path / "v2b" / "RAP_annotation" / "RAP_annotation.mat"
    m = scipy.io.loadmat(path)
    m["RAP_annotation"][0, 0]["selected_attribute"] = np.array([[9.0]])
    scipy.io.savemat(path, {"RAP_annotation": m["RAP_annotation"]})
    with pytest.raises(AnnotationError, match=r"selected_attribute: 1-based indices must lie in 1\.\.8"):
        RAPv2(tmp_path / "v2b")
