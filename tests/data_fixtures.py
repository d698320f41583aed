"""Tiny, faithful fixtures in the real dataset formats (spec ``datasets.md`` §10), written to a temp folder."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import torch

SIZE = 16


def coord_image(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """uint8 (3, size, size): R = 10 x, G = 10 y, B = seed, so any crop can be checked exactly."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack([xs * 10, ys * 10, torch.full_like(xs, seed)]).to(torch.uint8)


def write_image(path: Path, seed: int = 0) -> torch.Tensor:
    path.parent.mkdir(parents=True, exist_ok=True)
    from PIL import Image

    image = coord_image(seed)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    if path.suffix.lower() in (".jpg", ".jpeg"):
        pil.save(path, quality=95)
    else:  # PNG, BMP, ...: lossless
        pil.save(path)
    return image


def cellstr(names) -> np.ndarray:
    """An n x 1 MATLAB cell of strings."""
    out = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        out[i, 0] = np.array([n])
    return out


def mat_struct(**fields) -> np.ndarray:
    """A 1 x 1 MATLAB struct with the fields in the given order."""
    out = np.zeros((1, 1), dtype=[(k, object) for k in fields])
    for k, v in fields.items():
        out[0, 0][k] = v
    return out


# ----------------------------------------------------------------------------------------------- VOC
VOC_OBJECTS = {  # id -> [(name, difficult)]
    "000005": [("chair", 1), ("person", 1), ("person", 0)],  # chair difficult only -> 0; person -> 1
    "000007": [("car", 0)],
    "000009": [("dog", 1), ("horse", 0), ("horse", 0)],
    "000012": [("car", 1), ("tvmonitor", 0)],
}
VOC_SPLITS = {"trainval": ["000005", "000007"], "test": ["000009", "000012"]}


def voc_xml(objects) -> str:
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>8</xmax><ymax>8</ymax></bndbox></object>"
        for n, d in objects
    )
    return f"<annotation><filename>x.jpg</filename><size><width>16</width><height>16</height><depth>3</depth></size>{objs}</annotation>"


def make_voc(root: Path, expected: dict[str, np.ndarray]) -> Path:
    """``VOCdevkit/VOC2007`` with XMLs, JPEGs, split lists and per-class lists (1- and 2-space alignment)."""
    from visattn.data.voc import VOC_CLASSES

    voc = root / "VOCdevkit" / "VOC2007"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (voc / "Annotations").mkdir()
    for k, (i, objects) in enumerate(VOC_OBJECTS.items()):
        (voc / "Annotations" / f"{i}.xml").write_text(voc_xml(objects))
        write_image(voc / "JPEGImages" / f"{i}.jpg", k)
    for split, ids in VOC_SPLITS.items():
        (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
        for c, name in enumerate(VOC_CLASSES):
            # official alignment: one space before -1, two before 0 and 1
            (main / f"{name}_{split}.txt").write_text("".join(f"{i} {int(expected[i][c]):2d}\n" for i in ids))
    return voc


# ----------------------------------------------------------------------------------------------- COCO
def coco_json() -> dict:
    return {
        "images": [
            {"id": 10, "file_name": "COCO_val2014_000000000010.jpg", "width": 16, "height": 16},
            {"id": 11, "file_name": "COCO_val2014_000000000011.jpg", "width": 16, "height": 16},
            {"id": 12, "file_name": "COCO_val2014_000000000012.jpg", "width": 16, "height": 16},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 90, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 1},
            {"id": 3, "image_id": 12, "category_id": 3, "bbox": [0, 0, 4, 4], "area": 16, "iscrowd": 0},
            {"id": 4, "image_id": 12, "category_id": 3, "bbox": [1, 1, 4, 4], "area": 16, "iscrowd": 0},
        ],
        "categories": [  # gapped ids, listed out of order
            {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
        ],
    }


def make_coco(root: Path, data: dict | None = None) -> Path:
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data or coco_json()))
    for k, img in enumerate(coco_json()["images"]):
        write_image(root / "val2014" / img["file_name"], k)
    return root


# ----------------------------------------------------------------------------------------------- WIDER
def wider_json() -> dict:
    a = [1, -1, 0, 1, -1, -1, 0, 1, 1, -1, 0, 0, 1, -1]
    return {
        "images": [
            {
                "file_name": "train/0--Parade/0_Parade_a.png",
                "scene_id": 0,
                "targets": [
                    {"attribute": a, "bbox": [2, 3, 5, 4]},
                    {"attribute": [-v for v in a], "bbox": [10, 12, 10, 8]},  # partly outside the 16x16 image
                ],
            },
            {
                "file_name": "train/1--Handshaking/1_Handshaking_b.png",
                "scene_id": 1,
                "targets": [{"attribute": [0] * 13 + [1], "bbox": [20, 20, 5, 5]}],  # entirely outside
            },
        ],
        "attribute_id_map": {
            str(i): n
            for i, n in enumerate(
                [
                    "Male",
                    "longHair",
                    "sunglass",
                    "Hat",
                    "Tshirt",
                    "longSleeve",
                    "formal",
                    "shorts",
                    "jeans",
                    "longPants",
                    "skirt",
                    "faceMask",
                    "logo",
                    "stripe",
                ]
            )
        },
        "scene_id_map": {"0": "Parade", "1": "Handshaking"},
    }


def make_wider(root: Path, data: dict | None = None) -> Path:
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "wider_attribute_trainval.json").write_text(json.dumps(data or wider_json()))
    for k, img in enumerate(wider_json()["images"]):
        write_image(root / "Image" / img["file_name"], k)  # PNG is lossless: crops are checked exactly
    return root


# ----------------------------------------------------------------------------------------------- PETA
def make_peta_raw(root: Path) -> Path:
    a = root / "3DPeS" / "archive"
    a.mkdir(parents=True)
    (a / "Label.txt").write_text("1 upperBodyBlack personalMale\n2 hairLong\n")
    for k, name in enumerate(["0001_a.png", "0001_b.png", "0002_c.png"]):
        write_image(a / name, k)
    (a / "Thumbs.db").write_bytes(b"not an image")
    b = root / "VIPeR" / "archive"
    b.mkdir(parents=True)
    (b / "Label.txt").write_text("5 personalMale\n010_090.bmp hairLong accessoryHat\n")
    write_image(b / "005_045.png", 7)
    write_image(b / "010_090.bmp", 8)  # file-keyed line; BMP
    return root


def peta_mat(root: Path, n: int = 6, n_attr: int = 36, seed: int = 0):
    """Write ``PETA.mat``; returns (labels (n, n_attr), names, partitions[p] = (train, val, test) 1-based)."""
    import scipy.io

    from visattn.data.peta import PETA_EVAL_ATTRIBUTES

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=(n, n_attr)).astype(float)
    meta = rng.integers(0, 100, size=(n, 4)).astype(float)
    names = list(PETA_EVAL_ATTRIBUTES) + [f"extra{i}" for i in range(n_attr - 35)]
    parts = np.empty((5, 1), dtype=object)
    splits = []
    for p in range(5):
        perm = rng.permutation(n) + 1
        tr, va, te = perm[:3], perm[3:4], perm[4:]
        splits.append((tr, va, te))
        parts[p, 0] = mat_struct(
            train=tr[:, None].astype(float), val=va[:, None].astype(float), test=te[:, None].astype(float)
        )
    peta = np.zeros((1, 1), dtype=[("a", object), ("b", object), ("c", object), ("d", object)])
    peta[0, 0]["a"] = np.concatenate([meta, labels], axis=1)
    peta[0, 0]["b"] = cellstr(names)
    peta[0, 0]["c"] = np.zeros((1, 1))
    peta[0, 0]["d"] = parts
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "PETA.mat", {"peta": peta})
    return labels, names, splits


# ----------------------------------------------------------------------------------------------- PA-100K
def pa100k_mat(root: Path, sizes=(3, 2, 1), seed: int = 0, **override) -> dict:
    import scipy.io

    from visattn.data.pa100k import PA100K_ATTRIBUTES

    rng = np.random.default_rng(seed)
    mat: dict = {"attributes": cellstr(PA100K_ATTRIBUTES)}
    k = 0
    for part, n in zip(("train", "val", "test"), sizes, strict=True):
        mat[f"{part}_images_name"] = cellstr([f"{k + i + 1:06d}.jpg" for i in range(n)])
        mat[f"{part}_label"] = rng.integers(0, 2, size=(n, 26)).astype(np.uint8)
        k += n
    mat.update(override)
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "annotation.mat", mat)
    return mat


# ----------------------------------------------------------------------------------------------- RAP
def rap1_mat(root: Path, n: int = 5, n_attr: int = 53, labels: np.ndarray | None = None) -> dict:
    import scipy.io

    rng = np.random.default_rng(1)
    if labels is None:
        labels = rng.integers(0, 2, size=(n, n_attr)).astype(float)
        labels[1, 3] = 2  # uncertain
    parts = np.empty((5, 1), dtype=object)
    splits = []
    for p in range(5):
        perm = rng.permutation(n) + 1
        splits.append((perm[:3], perm[3:]))
        parts[p, 0] = mat_struct(trainval=perm[None, :3].astype(float), test=perm[None, 3:].astype(float))
    names = [f"attr{i}" for i in range(n_attr)]
    image_names = [f"CAM01_2014-02-15_{i:08d}.png" for i in range(n)]
    fields = [
        parts,
        labels,
        np.zeros((1, 1)),
        cellstr(names),
        np.zeros((1, 1)),
        cellstr(image_names),
        cellstr(names[:51]),
    ]
    ann = np.zeros((1, 1), dtype=[(f"f{i}", object) for i in range(len(fields))])
    for i, f in enumerate(fields):
        ann[0, 0][f"f{i}"] = f
    (root / "RAP_annotation").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": ann})
    return {"labels": labels, "names": names, "image_names": image_names, "splits": splits}


def rap2_mat(root: Path, n: int = 6, drop: str | None = None) -> dict:
    import scipy.io

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, size=(n, 8)).astype(np.uint8)
    labels[0, 2] = 2
    names = [f"a{i}" for i in range(8)]
    image_names = [f"img{i:05d}.jpg" for i in range(n)]
    parts = np.empty((1, 5), dtype=object)
    splits = []
    for p in range(5):
        perm = rng.permutation(n) + 1
        tr, va, te = perm[None, :3], perm[None, 3:4], perm[None, 4:]
        splits.append((tr[0], va[0], te[0]))
        parts[0, p] = mat_struct(
            train_index=tr.astype(float), val_index=va.astype(float), test_index=te.astype(float)
        )
    fields = {
        "name": cellstr(image_names),
        "attribute": cellstr(names),
        "data": labels,
        "selected_attribute": np.array([[3, 1, 5]], dtype=float),
        "partition_attribute": parts,
    }
    if drop:
        del fields[drop]
    (root / "RAP_annotation").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "RAP_annotation" / "RAP_annotation.mat", {"RAP_annotation": mat_struct(**fields)})
    return {"labels": labels, "names": names, "image_names": image_names, "splits": splits}


# ----------------------------------------------------------------------------------------------- IDX
def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    dt = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[code]
    head = struct_pack(code, array.shape)
    return head + array.astype(dt).tobytes()


def struct_pack(code: int, shape) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def make_idx(root: Path, prefix: str = "train", n: int = 4, gz: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(n, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(arr)
        if gz:
            (root / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (root / stem).write_bytes(data)
    return images, labels


def cli_train(recipe: str, out: Path, *sets: str) -> list[dict[str, str]]:
    """``visattn train recipe --set ... --set output=out`` (must succeed); the rows of its ``log.csv``."""
    import csv

    from visattn.cli import main

    assert main(["train", str(recipe), *sets, "--set", f"output={out}"]) == 0
    with (Path(out) / "log.csv").open() as f:
        return list(csv.DictReader(f))
