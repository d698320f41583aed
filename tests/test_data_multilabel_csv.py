"""Generic multi-label CSV (wide and list layouts) and JSON (native, mmpretrain, CSRA) loaders."""

import json

import pytest
import torch
from data_fixtures import coord_image, write_image
from torch.utils.data import DataLoader

from visattn.data._common import AnnotationError
from visattn.data.multilabel_csv import MultiLabelCSV, MultiLabelJSON


def test_wide_csv_encodings(tmp_path):
    f = tmp_path / "ann.csv"
    f.write_text("path,cat,dog,bird\nimg/a.png,1,-1,\nimg/b.png,0,1,-1\nimg/c.png,-1,-1,1\n")
    ds = MultiLabelCSV(f, encoding="ternary")
    assert ds.class_names == ["cat", "dog", "bird"]
    assert ds.labels.tolist() == [[1, -1, 0], [0, 1, -1], [-1, -1, 1]]
    assert ds.masks.tolist()[0] == [True, True, False] and ds.paths[0] == str(tmp_path / "img" / "a.png")
    reordered = MultiLabelCSV(f, encoding="ternary", classes=["bird", "cat", "dog"])
    assert reordered.labels[0].tolist() == [0, 1, -1]
    f.write_text("path,cat,dog\na.png,1,0\nb.png,0,0\nc.png,0,1\n")
    assert MultiLabelCSV(f, encoding="binary").labels.tolist() == [[1, -1], [-1, -1], [-1, 1]]
    with pytest.raises(AnnotationError, match=r"ann\.csv, line 2: column 'cat': value '-1' not in \[0, 1\]"):
        f.write_text("path,cat,dog\na.png,-1,0\n")
        MultiLabelCSV(f, encoding="binary")
    with pytest.raises(AnnotationError, match=r"line 2: column 'dog': value ''"):
        f.write_text("path,cat,dog\na.png,1,\n")
        MultiLabelCSV(f, encoding="binary")
    with pytest.raises(ValueError, match="encoding must be stated"):
        MultiLabelCSV(f, encoding="auto")


def test_list_csv(tmp_path):
    f = tmp_path / "ann.csv"
    f.write_text("path,positive,ignore\na.png,cat;dog,\nb.png,,bird\nc.png,bird,cat\n")
    ds = MultiLabelCSV(f, encoding="ternary")
    assert ds.class_names == ["bird", "cat", "dog"]
    assert ds.labels.tolist() == [[-1, 1, 1], [0, -1, -1], [1, 0, -1]]
    vocab = MultiLabelCSV(f, encoding="ternary", classes=["dog", "cat", "bird", "fish"])
    assert vocab.labels[0].tolist() == [1, 1, -1, -1]
    with pytest.raises(AnnotationError, match=r"ann\.csv, line 3: unknown class 'bird'"):
        MultiLabelCSV(f, encoding="ternary", classes=["cat", "dog"])
    with pytest.raises(AnnotationError, match=r"line 3: an 'ignore' entry needs encoding='ternary'"):
        MultiLabelCSV(f, encoding="binary")
    f.write_text("path,positive\na.png,cat\nb.png,dog\na.png,dog\n")
    with pytest.raises(
        AnnotationError, match=r"ann\.csv, line 4: duplicate path 'a\.png' \(first at line 2\)"
    ):
        MultiLabelCSV(f, encoding="binary")
    f.write_text("image,cat\n")
    with pytest.raises(AnnotationError, match=r"line 1: expected a header starting with 'path'"):
        MultiLabelCSV(f, encoding="binary")


def test_native_json_with_boxes_and_dataloader(tmp_path):
    for k, name in enumerate(["a.png", "b.png", "c.png"]):
        write_image(tmp_path / "img" / name, k)
    f = tmp_path / "ann.json"
    samples = [
        {"path": "img/a.png", "positive": ["cat"], "ignore": ["dog"], "box": [0, 0, 8, 8]},
        {"path": "img/b.png", "positive": [1, 2], "box": [4, 4, 8, 8]},
        {"path": "img/c.png", "positive": [], "ignore": [2], "box": [8, 8, 8, 8]},
    ]
    f.write_text(json.dumps({"classes": ["cat", "dog", "bird"], "samples": samples}))
    ds = MultiLabelJSON(f)
    assert ds.labels.tolist() == [[1, 0, -1], [-1, 1, 1], [-1, -1, 0]]
    assert torch.equal(ds.load(1), coord_image(1)[:, 4:12, 4:12])
    images, targets, masks, index = next(iter(DataLoader(ds, batch_size=3, num_workers=0)))
    assert images.shape == (3, 3, 8, 8) and targets.tolist()[0] == [1, 0, 0] and index.tolist() == [0, 1, 2]
    assert masks.tolist()[0] == [True, False, True]

    samples[2]["positive"] = ["fish"]
    f.write_text(json.dumps({"classes": ["cat", "dog", "bird"], "samples": samples}))
    with pytest.raises(AnnotationError, match=r"ann\.json, samples\[2\]: unknown class 'fish'"):
        MultiLabelJSON(f)
    samples[2].update(positive=[], path="img/a.png")
    f.write_text(json.dumps({"classes": ["cat", "dog", "bird"], "samples": samples}))
    with pytest.raises(
        AnnotationError, match=r"samples\[2\]: duplicate path 'img/a\.png' \(first at key samples\[0\]\)"
    ):
        MultiLabelJSON(f)
    samples[2].update(path="img/c.png", positive=[3])
    f.write_text(json.dumps({"classes": ["cat", "dog", "bird"], "samples": samples}))
    with pytest.raises(AnnotationError, match=r"samples\[2\]: class index 3 out of range"):
        MultiLabelJSON(f)


def test_importers(tmp_path):
    mm = tmp_path / "mm.json"
    data = {
        "metainfo": {"classes": ["a", "b", "c"]},
        "data_list": [{"img_path": "x.jpg", "gt_label": [0, 2]}],
    }
    mm.write_text(json.dumps(data))
    assert MultiLabelJSON(mm, format="mmpretrain").labels.tolist() == [[1, -1, 1]]
    csra = tmp_path / "test_wider.json"
    rows = [
        {"img_path": "Image/a.jpg", "target": [1, 0, 99], "bbox": [1, 2, 3, 4]},
        {"img_path": "Image/b.jpg", "target": [0, 99, 1], "bbox": [0, 0, 3, 4]},
    ]
    csra.write_text(json.dumps(rows))
    ds = MultiLabelJSON(
        csra, format="csra", encoding="csra_wider_test", classes=["x", "y", "z"], root="/data"
    )
    assert ds.labels.tolist() == [[1, -1, 0], [-1, 0, 1]] and ds.boxes[0] == (1.0, 2.0, 3.0, 4.0)
    assert ds.paths[1] == "/data/Image/b.jpg" and ds.class_names == ["x", "y", "z"]
    with pytest.raises(ValueError, match="encoding must be stated"):
        MultiLabelJSON(csra, format="csra")
    with pytest.raises(
        AnnotationError, match=r"test_wider\.json, \[0\]: 'target' must be a list of values in \[0, 1\]"
    ):
        MultiLabelJSON(csra, format="csra", encoding="binary")
    voc_test = tmp_path / "voc_test.json"
    voc_test.write_text(
        json.dumps([{"img_path": "a.jpg", "target": [1, 0, -1]}, {"img_path": "b.jpg", "target": [1]}])
    )
    with pytest.raises(AnnotationError, match=r"\[1\]: 'target' has 1 entries, expected 3"):
        MultiLabelJSON(voc_test, format="csra", encoding="ternary")
