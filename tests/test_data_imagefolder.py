"""ImageFolder (ImageNet layout) reader (spec ``datasets.md`` §9)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from visattn.data import create_dataset
from visattn.data._common import AnnotationError
from visattn.data.imagefolder import ImageFolder


def write_png(path: Path, value: int, size: int = 16) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size, size, 3), np.uint8)
    arr[..., 0], arr[..., 1] = value, np.arange(size, dtype=np.uint8)[None, :] * 3
    Image.fromarray(arr).save(path)


def write_imagefolder(root: Path, classes=("n02", "n01"), per_class: int = 2, size: int = 16) -> Path:
    """``root/<class>/...``: per class ``per_class`` PNGs (one in a nested folder) and a non-image file."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            sub = root / name / ("nested" if i == 0 else "")
            write_png(sub / f"img{i}.PNG" if i % 2 else sub / f"img{i}.png", 40 * c + i, size)
        (root / name / "notes.txt").write_text("not an image")
    return root


def test_sorting_recursion_and_extension_filter(tmp_path):
    root = write_imagefolder(tmp_path / "train", classes=("n02", "n01", "B"))
    (root / ".hidden").mkdir()
    (root / "n01" / ".DS_Store").write_bytes(b"x")
    ds = ImageFolder(root)
    assert ds.class_names == ["B", "n01", "n02"]  # Python string order
    assert ds.class_to_idx == {"B": 0, "n01": 1, "n02": 2}
    assert len(ds) == 6 and ds.targets.tolist() == [0, 0, 1, 1, 2, 2]
    assert [Path(p).relative_to(root).as_posix() for p in ds.paths[:2]] == ["B/img1.PNG", "B/nested/img0.png"]
    image, label = ds[3]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32 and label == 1
    assert image[0, 0, 0] == 40 / 255 and image[1, 0, 5] == 15 / 255  # n01 is class index 1 of the writer
    assert ImageFolder(root, transform=lambda x: x[:1])[0][0].shape == (1, 16, 16)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        ImageFolder(tmp_path / "missing")
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(AnnotationError, match="empty_root: no class sub-folders"):
        ImageFolder(tmp_path / "empty_root")
    root = write_imagefolder(tmp_path / "data")
    (root / "zzz" / "sub").mkdir(parents=True)
    (root / "zzz" / "sub" / "readme.md").write_text("x")
    with pytest.raises(AnnotationError, match=r"data/zzz: class folder 'zzz' holds no image file"):
        ImageFolder(root)
    shutil.rmtree(root / "zzz")
    with pytest.raises(AnnotationError, match=r"n01/notes\.txt: not an image file"):
        ImageFolder(root, strict=True)
    (root / "n01" / "broken.jpg").write_bytes(b"not a jpeg")
    ds = ImageFolder(root)  # lazily decoded: the error comes when the image is read, naming it
    bad = ds.paths.index(str(root / "n01" / "broken.jpg"))
    with pytest.raises(ValueError, match=r"broken\.jpg: cannot decode image"):
        ds[bad]
    with pytest.raises(ValueError, match=r"broken\.jpg: cannot decode image"):
        ImageFolder(root, verify=True)
    with pytest.raises(FileNotFoundError, match="n09"):
        ImageFolder(root, classes=["n01", "n09"])


def test_fixed_class_list_and_factory(tmp_path):
    write_imagefolder(tmp_path / "train", classes=("a", "b", "c"))
    write_imagefolder(tmp_path / "val", classes=("a", "b", "c", "extra"))
    assert ImageFolder(tmp_path / "val", classes=["a", "b", "c"]).class_names == ["a", "b", "c"]
    train = create_dataset("imagefolder", "train", root=str(tmp_path))
    val = create_dataset("imagefolder", "val", splits={"val": str(tmp_path / "train")})
    assert train.class_names == ["a", "b", "c"] and len(val) == 6
    noisy = create_dataset("imagefolder", "train", root=str(tmp_path), label_noise={"clean_ratio": 0.5})
    assert int(noisy.noisy_mask.sum()) == 3 and noisy.class_names == ["a", "b", "c"]
    with pytest.raises(ValueError, match="must map the split 'train'"):
        create_dataset("imagefolder", "train", splits={"val": "x"})
    with pytest.raises(ValueError, match="needs data.kwargs.root"):
        create_dataset("imagefolder", "train")
