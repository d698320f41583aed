"""WIDER-Attribute loaders (official JSON and SRN lists) on tiny fixtures."""

import pytest
import torch
from data_fixtures import coord_image, make_wider, wider_json
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from visattn.data._common import AnnotationError, crop_box
from visattn.data.wider_attribute import WIDER_ATTRIBUTES, WIDERAttribute, WIDERAttributeSRN


def test_one_sample_per_person_with_ternary_labels(tmp_path):
    ds = WIDERAttribute(make_wider(tmp_path))
    a = wider_json()["images"][0]["targets"][0]["attribute"]
    assert len(ds) == 3 and ds.image_index == [0, 0, 1] and ds.scene_ids == [0, 0, 1]
    assert ds.class_names == list(WIDER_ATTRIBUTES)
    assert ds.labels[0].tolist() == a and ds.labels[1].tolist() == [-v for v in a]
    assert torch.equal(ds.masks[0], torch.tensor(a) != 0)  # unspecified -> ignored for evaluation
    assert torch.equal(ds.targets[0], (torch.tensor(a) == 1).float())  # ... and trained as negative
    assert ds.boxes[1] == (10.0, 12.0, 10.0, 8.0)


def test_crops_clamp_vs_csra(tmp_path):
    ds = WIDERAttribute(make_wider(tmp_path))
    full = coord_image(0)
    assert torch.equal(ds.load(0), full[:, 3:7, 2:7])
    assert torch.equal(ds.load(1), full[:, 12:16, 10:16])  # clamped to the 16x16 image
    assert ds.load(2).shape == (3, 16, 16)  # entirely outside -> whole image
    csra = WIDERAttribute(tmp_path, box_policy="csra")
    c = csra.load(1)
    assert c.shape == (3, 8, 10) and torch.equal(c[:, :4, :6], full[:, 12:16, 10:16])
    assert c[:, 4:].eq(0).all() and c[:, :, 6:].eq(0).all()  # black padding, as PIL.Image.crop
    assert csra.load(2).eq(0).all()
    image, target, mask, index = csra[1]
    assert image.shape == (3, 8, 10) and image.dtype == torch.float32 and index == 1


def test_crop_box_rounds_like_pil():
    img = coord_image(0)
    assert torch.equal(crop_box(img, (1.4, 2.6, 3.2, 1.0)), img[:, 3:4, 1:5])
    with pytest.raises(ValueError, match="box_policy"):
        crop_box(img, (0, 0, 1, 1), "pad")


def test_dataloader(tmp_path):
    ds = WIDERAttribute(make_wider(tmp_path), transform=v2.Resize((8, 8), antialias=True))
    batches = list(DataLoader(ds, batch_size=2, num_workers=0))
    images, targets, masks, index = batches[0]
    assert images.shape == (2, 3, 8, 8) and targets.shape == (2, 14) and masks.dtype == torch.bool
    assert index.tolist() == [0, 1] and batches[1][0].shape == (1, 3, 8, 8)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: d["images"][0]["targets"][1].update(attribute=[1] * 13),
            r"images\[0\]\.targets\[1\]: 'attribute'",
        ),
        (lambda d: d["images"][1]["targets"][0]["attribute"].__setitem__(3, 2), r"images\[1\]\.targets\[0\]"),
        (
            lambda d: d["images"][0]["targets"][0].update(bbox=[0, 0, -1, 4]),
            r"targets\[0\]\.bbox: expected a box",
        ),
        (lambda d: d["attribute_id_map"].pop("13"), r"attribute_id_map: expected keys"),
        (lambda d: d["images"].append(dict(d["images"][0])), r"images\[2\]: duplicate file_name"),
    ],
)
def test_malformed_named(tmp_path, mutate, message):
    data = wider_json()
    mutate(data)
    root = make_wider(tmp_path, data)
    with pytest.raises(AnnotationError, match=message) as err:
        WIDERAttribute(root)
    assert "wider_attribute_trainval.json" in str(err.value)


def test_srn_lists(tmp_path):
    imgs = ["data/wider/train/a.jpg", "data/wider/val/b.jpg", "data/wider/train/c.jpg"]
    (tmp_path / "wider_att_train_imglist.txt").write_text("\n".join(imgs) + "\n")
    rows = [[1] * 14, [-1] * 14, [0] * 13 + [1]]
    (tmp_path / "wider_att_train_label.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    train = WIDERAttributeSRN(tmp_path, "train")
    assert [p.split("/")[-1] for p in train.paths] == ["a.jpg", "c.jpg"] and train.labels[1, 0] == 0
    assert len(WIDERAttributeSRN(tmp_path, "val")) == 1 and len(WIDERAttributeSRN(tmp_path, "trainval")) == 3
    (tmp_path / "wider_att_train_label.txt").write_text("1 1\n")
    with pytest.raises(AnnotationError, match=r"wider_att_train_label\.txt: 1 label lines for 3 images"):
        WIDERAttributeSRN(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="wider_att_test_imglist"):
        WIDERAttributeSRN(tmp_path, "test")
