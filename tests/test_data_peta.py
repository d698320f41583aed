"""PETA loaders: PETA.mat (positional struct) and the raw release."""

import numpy as np
import pytest
import scipy.io
import torch
from data_fixtures import cellstr, coord_image, make_peta_raw, peta_mat, write_image

from visattn.data._common import AnnotationError
from visattn.data.peta import PETA, PETA_EVAL_ATTRIBUTES, PETA_GROUP_ORDER, PETARaw


def test_mat_positional_fields_and_one_based_splits(tmp_path):
    labels, names, splits = peta_mat(tmp_path)
    ref = scipy.io.loadmat(tmp_path / "PETA.mat")["peta"]
    # the reference indexing expression of dangweili's transform_peta.py
    assert np.array_equal(ref[0][0][3][1][0][0][0][0][:, 0] - 1, splits[1][0] - 1)
    ds = PETA(tmp_path, "train", partition=1)
    assert ds.rows.tolist() == (splits[1][0] - 1).tolist() and ds.class_names == list(PETA_EVAL_ATTRIBUTES)
    assert torch.equal(ds.targets, torch.from_numpy(labels[ds.rows, :35]).float()) and ds.masks.all()
    assert ds.paths[0].endswith(f"images/{splits[1][0][0]:05d}.png")
    assert len(PETA(tmp_path, "val", partition=1)) == 1 and len(PETA(tmp_path, "test", partition=1)) == 2
    tv = PETA(tmp_path, "trainval", partition=1)
    assert tv.rows.tolist() == (np.concatenate(splits[1][:2]) - 1).tolist()
    full = PETA(tmp_path, "test", attributes="all")
    assert full.class_names == names and full.labels.shape == (2, 36)
    grouped = PETA(tmp_path, "train", reorder="group")
    assert grouped.class_names[0] == "accessoryHat"
    assert torch.equal(grouped.labels, PETA(tmp_path, "train").labels[:, list(PETA_GROUP_ORDER)])
    assert PETA(tmp_path, indices=[5, 0]).rows.tolist() == [5, 0]


def test_mat_item(tmp_path):
    _, _, splits = peta_mat(tmp_path)
    write_image(tmp_path / "images" / f"{splits[0][2][0]:05d}.png", 3)
    image, target, mask, index = PETA(tmp_path, "test")[0]
    assert torch.allclose(image, coord_image(3).float() / 255) and target.shape == (35,) and index == 0


def _savemat_with(tmp_path, **changes):
    peta_mat(tmp_path)
    m = scipy.io.loadmat(tmp_path / "PETA.mat")
    rec = m["peta"][0, 0]
    for field, value in changes.items():
        rec[field] = value
    scipy.io.savemat(tmp_path / "PETA.mat", {"peta": m["peta"]})


def test_mat_errors(tmp_path):
    mat = tmp_path / "PETA.mat"
    peta_mat(tmp_path)
    data = scipy.io.loadmat(mat)["peta"][0, 0]["a"]
    data[2, 4 + 7] = 3
    _savemat_with(tmp_path, a=data)
    with pytest.raises(AnnotationError, match=r"PETA\.mat, peta field 0 .*label 3\.0 at row 2, column 7"):
        PETA(tmp_path, "train", attributes="all", indices=[0, 1, 2])
    _savemat_with(tmp_path, b=cellstr(["x"] * 3))
    with pytest.raises(AnnotationError, match="expected 4 \\+ 3 columns"):
        PETA(tmp_path)
    peta_mat(tmp_path)
    with pytest.raises(ValueError, match="partition"):
        PETA(tmp_path, partition=5)
    with pytest.raises(ValueError, match="split"):
        PETA(tmp_path, split="gallery")
    scipy.io.savemat(mat, {"other": np.zeros(2)})
    with pytest.raises(AnnotationError, match=r"PETA\.mat, peta: missing variable"):
        PETA(tmp_path)
    mat.write_bytes(
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + b" " * 90 + b"\x00" * 400 + b"\x89HDF\r\n\x1a\n"
    )
    with pytest.raises(AnnotationError, match=r"PETA\.mat: MATLAB v7\.3 \(HDF5\).*-v7"):
        PETA(tmp_path)
    mat.write_bytes(b"garbage" * 30)
    with pytest.raises(AnnotationError, match=r"PETA\.mat: not a readable MAT file"):
        PETA(tmp_path)
    mat.unlink()
    with pytest.raises(FileNotFoundError, match=r"PETA\.mat"):
        PETA(tmp_path)


def test_mat_bad_split_indices(tmp_path):
    peta_mat(tmp_path, n=6)
    m = scipy.io.loadmat(tmp_path / "PETA.mat")
    m["peta"][0, 0]["d"][0, 0][0, 0]["test"] = np.array([[7.0], [1.0]])
    scipy.io.savemat(tmp_path / "PETA.mat", {"peta": m["peta"]})
    with pytest.raises(
        AnnotationError, match=r"peta field 3\[0\] field 2 \(test\): 1-based indices must lie in 1\.\.6"
    ):
        PETA(tmp_path, "test")


def test_raw_release(tmp_path):
    ds = PETARaw(make_peta_raw(tmp_path))
    names = [p.split("/")[-1] for p in ds.paths]
    assert names == ["0001_a.png", "0001_b.png", "0002_c.png", "005_045.png", "010_090.bmp"]  # no Thumbs.db
    assert ds.class_names == ["accessoryHat", "hairLong", "personalMale", "upperBodyBlack"]
    assert ds.labels.tolist() == [
        [-1, -1, 1, 1],
        [-1, -1, 1, 1],
        [-1, 1, -1, -1],
        [-1, -1, 1, -1],
        [1, 1, -1, -1],  # keyed by file name
    ]
    assert ds.person_ids[0] == ("3DPeS", 1) and ds.person_ids[4] == ("VIPeR", None)
    assert torch.equal(ds.load(4), coord_image(8))  # BMP decoded through PIL
    vocab = PETARaw(tmp_path, attributes=["personalMale", "hairLong", "accessoryHat", "upperBodyBlack", "x"])
    assert vocab.labels[0].tolist() == [1, -1, -1, 1, -1]


def test_raw_errors(tmp_path):
    make_peta_raw(tmp_path)
    with pytest.raises(
        AnnotationError, match=r"3DPeS/archive/Label\.txt, line 1: unknown attribute 'upperBodyBlack'"
    ):
        PETARaw(tmp_path, attributes=["personalMale", "hairLong"])
    label = tmp_path / "3DPeS" / "archive" / "Label.txt"
    label.write_text("1 upperBodyBlack\n")
    with pytest.raises(AnnotationError, match=r"Label\.txt: image '0002_c\.png' is not labelled"):
        PETARaw(tmp_path)
    label.write_text("1 a\n2 b\n1 c\n")
    with pytest.raises(AnnotationError, match=r"Label\.txt, line 3: duplicate person id 1"):
        PETARaw(tmp_path)
    label.write_text("1 a\n2 b\nfoo.png c\n")
    with pytest.raises(AnnotationError, match=r"line 3: first token 'foo\.png'"):
        PETARaw(tmp_path)
    label.unlink()
    with pytest.raises(FileNotFoundError, match=r"3DPeS/archive/Label\.txt"):
        PETARaw(tmp_path)
