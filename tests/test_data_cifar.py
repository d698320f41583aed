"""CIFAR-10/100 python-version reader and its restricted unpickler (spec ``datasets.md`` §9)."""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from visattn.data import create_dataset
from visattn.data._common import AnnotationError
from visattn.data.cifar import CIFAR10, CIFAR100, UnsafePickleError, load_restricted_pickle

# ----------------------------------------------------------------------------------------------- fixtures
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python-2 ``str`` opcodes (SHORT_BINSTRING/BINSTRING), like the original files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def py2_pickle(obj) -> bytes:
    """A protocol-2 pickle as Python 2 wrote the CIFAR files (str keys, ``numpy.core.multiarray`` globals)."""
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def colour_images(n: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 3, 32, 32) with distinct known planes: R = 10 i + 1, G = 2 + seed, B = x + y."""
    ys, xs = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    out = np.empty((n, 3, 32, 32), np.uint8)
    for i in range(n):
        out[i, 0], out[i, 1], out[i, 2] = 10 * i + 1, 2 + seed, xs + ys
    return out


def _batch(images: np.ndarray, labels: dict, name: bytes) -> bytes:
    d = {
        b"batch_label": name,
        b"data": images.reshape(len(images), -1),
        b"filenames": [b"x.png"] * len(images),
    }
    d.update(labels)
    return py2_pickle(d)


def write_cifar10(root: Path, per_batch: int = 4, num_classes: int = 10) -> dict[str, np.ndarray]:
    """``root/cifar-10-batches-py`` with 5 train batches and a test batch of ``per_batch`` images each."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i, name in enumerate([*(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]):
        y = [(i + j) % num_classes for j in range(per_batch)]
        (folder / name).write_bytes(_batch(colour_images(per_batch, i), {b"labels": y}, name.encode()))
        labels[name] = np.array(y)
    meta = {
        b"label_names": [n.encode() for n in CIFAR10_NAMES],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return labels


def write_cifar100(root: Path, n: int = 4) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for i, split in enumerate(["train", "test"]):
        labels = {
            b"fine_labels": [(7 * j + i) % 100 for j in range(n)],
            b"coarse_labels": [j % 20 for j in range(n)],
        }
        (folder / split).write_bytes(_batch(colour_images(n, i), labels, split.encode()))
    meta = {
        b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
    }
    (folder / "meta").write_bytes(py2_pickle(meta))


# ----------------------------------------------------------------------------------------------- tests
def test_cifar10_layout_and_plane_order(tmp_path):
    labels = write_cifar10(tmp_path)
    train = CIFAR10(tmp_path, "train")
    assert len(train) == 20 and train.class_names == CIFAR10_NAMES and train.images.dtype == torch.uint8
    assert train.targets.tolist() == np.concatenate([labels[f"data_batch_{k}"] for k in range(1, 6)]).tolist()
    image, label = train[5]  # batch 2 (seed 1), image 1
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and isinstance(label, int)
    expected = torch.from_numpy(colour_images(4, 1)[1]).float() / 255
    assert torch.equal(image, expected)  # red plane first, row-major planes
    assert image[0, 0, 0] == 11 / 255 and image[1, 5, 5] == 3 / 255 and image[2, 3, 4] == 7 / 255
    test = CIFAR10(tmp_path / "cifar-10-batches-py", "test", transform=lambda x: x * 0)  # the folder itself
    assert len(test) == 4 and test[0][0].sum() == 0 and test.targets.tolist() == labels["test_batch"].tolist()


def test_cifar100_fine_and_coarse(tmp_path):
    write_cifar100(tmp_path)
    fine, coarse = CIFAR100(tmp_path, "train"), CIFAR100(tmp_path, "test", label="coarse")
    assert (
        fine.num_classes == 100 and fine.class_names[7] == "fine7" and fine.targets.tolist() == [0, 7, 14, 21]
    )
    assert coarse.num_classes == 20 and coarse.targets.tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="label must be 'fine' or 'coarse'"):
        CIFAR100(tmp_path, label="medium")


def test_factory_and_label_noise_on_train_only(tmp_path):
    write_cifar10(tmp_path, per_batch=20)
    noise = {"clean_ratio": 0.5, "seed": 1}
    train = create_dataset("cifar10", "train", root=str(tmp_path), label_noise=noise)
    test = create_dataset("cifar10", "test", root=str(tmp_path), label_noise=noise)
    assert type(train).__name__ == "NoisyLabels" and isinstance(test, CIFAR10)
    assert int(train.noisy_mask.sum()) == 50 and train[0][1] == int(train.targets[0])
    assert create_dataset("cifar100", "test", root=str(_c100(tmp_path)), label="coarse").num_classes == 20


def _c100(tmp_path):
    write_cifar100(tmp_path / "c100")
    return tmp_path / "c100"


def test_python3_pickles_are_accepted(tmp_path):
    """A protocol-4 pickle (numpy._core globals, bytes opcodes) of the same dict also loads."""
    f = tmp_path / "b"
    data = {b"data": np.arange(6, dtype=np.uint8), b"labels": [1, 2]}
    f.write_bytes(pickle.dumps(data, protocol=4))
    out = load_restricted_pickle(f)
    assert out[b"data"].tolist() == list(range(6)) and out[b"labels"] == [1, 2]


class _Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize(
    "payload, name",
    [(os.system, "system"), (eval, "builtins.eval"), (Path.unlink, "pathlib"), (pickle.loads, "loads")],
)
def test_malicious_pickle_is_refused_before_running(tmp_path, payload, name):
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if payload is os.system else str(marker)
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(tmp_path)
    evil = {b"data": _Evil(payload, arg), b"labels": [0]}
    (folder / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(UnsafePickleError, match=rf"data_batch_3: refusing to unpickle global '[\w.]*{name}"):
        CIFAR10(tmp_path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # also an UnpicklingError (and a ValueError)
        load_restricted_pickle(folder / "data_batch_3")
    # the same payload in a Python-2 style file
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": _Evil(payload, arg)}))
    with pytest.raises(UnsafePickleError, match=r"batches\.meta: refusing"):
        CIFAR10(tmp_path, "test")
    assert not marker.exists()


def test_persistent_ids_are_refused(tmp_path):
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "x" if isinstance(obj, str) and obj == "ext" else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"a": "ext"})
    (tmp_path / "p").write_bytes(buf.getvalue())
    with pytest.raises(UnsafePickleError, match="persistent ids"):
        load_restricted_pickle(tmp_path / "p")


def test_malformed_files_name_the_file(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    good = (folder / "data_batch_2").read_bytes()
    cases = [
        (good[: len(good) // 2], r"data_batch_2: not a readable CIFAR pickle"),
        (py2_pickle([1, 2]), r"data_batch_2: expected a pickled dict"),
        (py2_pickle({b"labels": [0]}), r"data_batch_2, 'data': missing key \(found \['labels'\]\)"),
        (
            _batch(colour_images(2)[:, :, :16], {b"labels": [0, 1]}, b"x"),
            r"'data': expected a uint8 \(N, 3072\)",
        ),
        (_batch(colour_images(2), {b"labels": [0]}, b"x"), r"'labels': 1 labels for 2 images"),
        (
            _batch(colour_images(2), {b"labels": [0, 10]}, b"x"),
            r"'labels': labels must lie in 0..9, got 0..10",
        ),
        (_batch(colour_images(2), {b"labels": [0, "a"]}, b"x"), r"'labels': expected a list of ints"),
    ]
    for content, message in cases:
        (folder / "data_batch_2").write_bytes(content)
        with pytest.raises(AnnotationError, match=message):
            CIFAR10(tmp_path)
    (folder / "data_batch_2").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_2"):
        CIFAR10(tmp_path)
    (folder / "batches.meta").write_bytes(py2_pickle({b"label_names": [b"a", b"b"]}))
    with pytest.raises(AnnotationError, match=r"batches\.meta, 'label_names': expected 10 names, got 2"):
        CIFAR10(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CIFAR10(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        CIFAR10(tmp_path, "val")


def test_empty_batch_is_refused(tmp_path):
    write_cifar10(tmp_path)
    empty = {b"batch_label": b"x", b"data": np.zeros((0, 3072), np.uint8), b"labels": [], b"filenames": []}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(py2_pickle(empty))
    with pytest.raises(AnnotationError, match=r"test_batch: no samples \(the batch files hold 0 images\)"):
        CIFAR10(tmp_path, "test")
