"""IDX (MNIST / Fashion-MNIST) reader."""

import gzip

import numpy as np
import pytest
import torch
from data_fixtures import idx_bytes, make_idx

from visattn.data._common import AnnotationError
from visattn.data.idx import FASHION_MNIST_CLASSES, IDXDataset, read_idx


@pytest.mark.parametrize("gz", [True, False])
def test_folder_gz_or_raw(tmp_path, gz):
    images, labels = make_idx(tmp_path, "t10k", gz=gz)
    ds = IDXDataset(tmp_path, split="test", classes=FASHION_MNIST_CLASSES)
    assert len(ds) == 4 and ds.class_names[0] == "T-shirt/top"
    image, label = ds[2]
    assert image.shape == (1, 5, 4) and image.dtype == torch.float32
    assert torch.allclose(image[0], torch.from_numpy(images[2]).float() / 255) and label == labels[2]
    assert IDXDataset(tmp_path, split="test", transform=lambda x: x * 0)[0][0].sum() == 0


def test_read_idx_types_and_errors(tmp_path):
    f = tmp_path / "x.idx"
    f.write_bytes(idx_bytes(np.arange(6, dtype=np.float32).reshape(2, 3), 0x0D))
    out = read_idx(f)
    assert out.dtype == np.float32 and out.tolist() == [[0, 1, 2], [3, 4, 5]]
    f.write_bytes(gzip.compress(idx_bytes(np.array([-2, 300]), 0x0B)))  # name without .gz: content decides
    assert read_idx(f).tolist() == [-2, 300]
    f.write_bytes(idx_bytes(np.zeros((2, 2, 2)))[:-1])
    with pytest.raises(
        AnnotationError, match=r"x\.idx: data has 7 bytes, header \(2, 2, 2\) of uint8 needs 8"
    ):
        read_idx(f)
    f.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(AnnotationError, match="not an IDX file"):
        read_idx(f)


def test_dataset_errors(tmp_path):
    make_idx(tmp_path, "train", gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(AnnotationError, match=r"train-labels-idx1-ubyte: 3 labels for 4 images"):
        IDXDataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 2, 12])))
    with pytest.raises(AnnotationError, match="label 12 out of range for 10 classes"):
        IDXDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"t10k-images-idx3-ubyte"):
        IDXDataset(tmp_path, split="test")
    with pytest.raises(AnnotationError, match=r"expected \(N, H, W\) uint8 images"):
        IDXDataset(tmp_path / "train-labels-idx1-ubyte", tmp_path / "train-labels-idx1-ubyte")
