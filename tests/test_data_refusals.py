"""Bad data is refused at construction with one error naming the file (and line or key): empty splits,
duplicated images, directory-link loops in an ImageFolder and malformed mmpretrain JSON."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from data_fixtures import (
    VOC_OBJECTS,
    cellstr,
    coco_json,
    make_coco,
    make_idx,
    make_voc,
    make_wider,
    pa100k_mat,
    peta_mat,
    rap1_mat,
    rap2_mat,
    wider_json,
    write_image,
)

from visattn.data import create_dataset
from visattn.data._common import AnnotationError, MultiLabelDataset, check_unique
from visattn.data.coco import COCO2014
from visattn.data.idx import IDXDataset
from visattn.data.imagefolder import ImageFolder
from visattn.data.multilabel_csv import MultiLabelCSV, MultiLabelJSON
from visattn.data.pa100k import PA100K
from visattn.data.peta import PETA, PETARaw
from visattn.data.rap import RAPv1, RAPv2
from visattn.data.voc import VOC2007
from visattn.data.wider_attribute import WIDERAttribute, WIDERAttributeSRN


# ------------------------------------------------------------------------------------------ empty splits
def test_empty_voc_split_list(tmp_path):
    voc = make_voc(tmp_path, {i: np.full(20, -1, np.int8) for i in VOC_OBJECTS})
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n\n")
    for labels_from in ("xml", "imagesets"):
        with pytest.raises(AnnotationError, match=r"Main/trainval\.txt: no samples in split 'trainval'"):
            VOC2007(voc, "trainval", labels_from=labels_from)


def test_coco_without_annotated_images(tmp_path):
    data = coco_json()
    data["annotations"] = []
    make_coco(tmp_path, data)
    with pytest.raises(
        AnnotationError,
        match=r"instances_val2014\.json: no samples in split 'val' \(no image in 'images' has an annotation.*"
        r"keep_empty=True",
    ):
        COCO2014(tmp_path, "val")
    assert len(COCO2014(tmp_path, "val", keep_empty=True)) == 3  # kept as all-negative when asked
    data["images"] = []
    (tmp_path / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"no samples in split 'val' \(the 'images' list is empty\)"):
        COCO2014(tmp_path, "val", keep_empty=True)


@pytest.mark.parametrize("header", ["path,cat,dog\n", "path,positive,ignore\n", "path,positive\n\n"])
def test_csv_with_only_a_header(tmp_path, header):
    f = tmp_path / "ann.csv"
    f.write_text(header)
    with pytest.raises(AnnotationError, match=r"ann\.csv: no samples \(only a header"):
        MultiLabelCSV(f, encoding="ternary")
    with pytest.raises(AnnotationError, match=r"ann\.csv: no samples"):
        create_dataset("multilabel_csv", "train", files={"train": str(f)}, encoding="ternary")


@pytest.mark.parametrize(
    ("format", "data", "message"),
    [
        ("visattn", {"classes": ["a"], "samples": []}, r"ann\.json, samples: no samples"),
        (
            "mmpretrain",
            {"metainfo": {"classes": ["a"]}, "data_list": []},
            r"ann\.json, data_list: no samples",
        ),
        ("csra", [], r"ann\.json: no samples \(the list is empty\)"),
    ],
)
def test_json_without_samples(tmp_path, format, data, message):
    f = tmp_path / "ann.json"
    f.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=message):
        MultiLabelJSON(f, format=format, encoding="binary" if format == "csra" else None)


def test_imagefolder_without_images(tmp_path):
    write_image(tmp_path / "train" / "a" / "x.png")
    with pytest.raises(AnnotationError, match=r"train: no samples \(classes=\[\] selects no class folder\)"):
        ImageFolder(tmp_path / "train", classes=[])


def test_wider_attribute_without_persons(tmp_path):
    data = wider_json()
    for img in data["images"]:
        img["targets"] = []
    make_wider(tmp_path, data)
    with pytest.raises(
        AnnotationError, match=r"wider_attribute_trainval\.json, images: no samples in split 'trainval'"
    ):
        WIDERAttribute(tmp_path)


def test_wider_srn_empty_selection(tmp_path):
    (tmp_path / "wider_att_train_imglist.txt").write_text("data/wider/train/a.jpg\n")
    (tmp_path / "wider_att_train_label.txt").write_text(" ".join(["1"] * 14) + "\n")
    assert len(WIDERAttributeSRN(tmp_path, "train")) == 1
    with pytest.raises(
        AnnotationError,
        match=r"wider_att_train_imglist\.txt: no samples in split 'val' \(no listed path has 'val'",
    ):
        WIDERAttributeSRN(tmp_path, "val")
    (tmp_path / "wider_att_test_imglist.txt").write_text("")
    (tmp_path / "wider_att_test_label.txt").write_text("")
    with pytest.raises(
        AnnotationError, match=r"test_imglist\.txt: no samples in split 'test' \(the list is empty"
    ):
        WIDERAttributeSRN(tmp_path, "test")


def test_attribute_mat_files_with_an_empty_split(tmp_path):
    peta_mat(tmp_path / "peta", n=4)  # partitions of 3 / 1 / 0 rows
    with pytest.raises(AnnotationError, match=r"PETA\.mat, peta field 3\[0\]: no samples in split 'test'"):
        PETA(tmp_path / "peta", "test")
    with pytest.raises(ValueError, match=r"indices selects no rows of .*PETA\.mat"):
        PETA(tmp_path / "peta", indices=[])
    pa100k_mat(tmp_path / "pa", sizes=(3, 2, 0))
    with pytest.raises(AnnotationError, match=r"annotation\.mat: no samples in split 'test'"):
        PA100K(tmp_path / "pa", "test")
    rap2_mat(tmp_path / "rap2", n=4)
    with pytest.raises(
        AnnotationError,
        match=r"RAP_annotation\.mat, RAP_annotation\.partition_attribute\[1\]: no samples in split 'test'",
    ):
        RAPv2(tmp_path / "rap2", "test", partition=1)
    rap1_mat(tmp_path / "rap1")
    with pytest.raises(ValueError, match=r"indices selects no rows of .*RAP_annotation\.mat"):
        RAPv1(tmp_path / "rap1", indices=[])


def test_peta_raw_without_images(tmp_path):
    archive = tmp_path / "3DPeS" / "archive"
    archive.mkdir(parents=True)
    (archive / "Label.txt").write_text("1 personalMale\n")
    with pytest.raises(AnnotationError, match=r"no samples \(no image files in the <sub-dataset>/archive"):
        PETARaw(tmp_path)


def test_idx_without_images(tmp_path):
    make_idx(tmp_path, n=0)
    with pytest.raises(
        AnnotationError, match=r"train-images-idx3-ubyte\.gz: no samples in split 'train' \(the IDX file"
    ):
        IDXDataset(tmp_path)


def test_base_class_refuses_no_samples(tmp_path):
    with pytest.raises(AnnotationError, match=r"list\.txt: no samples in split 'val'"):
        MultiLabelDataset([], np.zeros((0, 2)), ["a", "b"], source=tmp_path / "list.txt", split="val")
    with pytest.raises(ValueError, match="no samples"):
        MultiLabelDataset([], np.zeros((0, 2)), ["a", "b"])


# ------------------------------------------------------------------------------------------ duplicates
def test_check_unique_names_both_places():
    check_unique(["a", "b"], "f.txt")
    with pytest.raises(AnnotationError, match=r"f\.txt, line 7: duplicate image 'a' \(first at line 2\)"):
        check_unique(["a", "b", "a"], "f.txt", lines=[2, 5, 7])
    with pytest.raises(
        AnnotationError, match=r"f\.mat, names\[2\]: duplicate image 'a' \(first at key names\[0\]\)"
    ):
        check_unique(["a", "b", "a"], "f.mat", key="names")


def test_rap_v1_duplicate_image_name(tmp_path):
    fx = rap1_mat(tmp_path)
    path = tmp_path / "RAP_annotation" / "RAP_annotation.mat"
    m = scipy.io.loadmat(path)
    names = list(fx["image_names"])
    names[3] = names[1]
    m["RAP_annotation"][0, 0]["f5"] = cellstr(names)
    scipy.io.savemat(path, {"RAP_annotation": m["RAP_annotation"]})
    with pytest.raises(
        AnnotationError,
        match=rf"RAP_annotation\.mat, RAP_annotation field 5 \(image names\)\[3\]: duplicate image name "
        rf"'{names[1]}' \(first at key RAP_annotation field 5 \(image names\)\[1\]\)",
    ):
        RAPv1(tmp_path)


def test_rap_v2_duplicate_image_name(tmp_path):
    fx = rap2_mat(tmp_path)
    path = tmp_path / "RAP_annotation" / "RAP_annotation.mat"
    m = scipy.io.loadmat(path)
    names = list(fx["image_names"])
    names[5] = names[0]
    m["RAP_annotation"][0, 0]["name"] = cellstr(names)
    scipy.io.savemat(path, {"RAP_annotation": m["RAP_annotation"]})
    with pytest.raises(
        AnnotationError,
        match=r"RAP_annotation\.name\[5\]: duplicate image name 'img00000\.jpg' \(first at key "
        r"RAP_annotation\.name\[0\]\)",
    ):
        RAPv2(tmp_path)


def test_wider_srn_duplicate_image(tmp_path):
    imgs = ["data/wider/train/a.jpg", "data/wider/val/b.jpg", "data/wider/train/a.jpg"]
    (tmp_path / "wider_att_train_imglist.txt").write_text("\n".join(imgs) + "\n")
    (tmp_path / "wider_att_train_label.txt").write_text((" ".join(["1"] * 14) + "\n") * 3)
    for split in ("train", "val", "trainval"):  # refused whichever split selects it
        with pytest.raises(
            AnnotationError,
            match=r"wider_att_train_imglist\.txt, line 3: duplicate image 'data/wider/train/a\.jpg' "
            r"\(first at line 1\)",
        ):
            WIDERAttributeSRN(tmp_path, split)


def test_voc_per_class_file_duplicate_names_both_lines(tmp_path):
    voc = make_voc(tmp_path, {i: np.full(20, -1, np.int8) for i in VOC_OBJECTS})
    (voc / "ImageSets" / "Main" / "cat_test.txt").write_text("000009 -1\n000012 -1\n000009  1\n")
    with pytest.raises(
        AnnotationError, match=r"cat_test\.txt, line 3: duplicate image id '000009' \(first at line 1\)"
    ):
        VOC2007(voc, "test", labels_from="imagesets")


# ------------------------------------------------------------------------------------------ link loops
def test_imagefolder_symlink_loop_counts_each_image_once(tmp_path, caplog):
    root = tmp_path / "train"
    for rel in ("a/x.png", "a/sub/y.png", "b/z.png"):
        write_image(root / rel)
    os.symlink(root / "a", root / "a" / "sub" / "up")  # ancestor: a loop
    os.symlink("..", root / "b" / "parent")  # the root itself: lists a/ and b/ again from b/
    with caplog.at_level(logging.WARNING, logger="visattn.data.imagefolder"):
        ds = ImageFolder(root)
    rel = sorted(Path(p).relative_to(root).as_posix() for p in ds.paths)
    assert len(ds) == 3 and len(set(map(os.path.realpath, ds.paths))) == 3
    assert rel == ["a/sub/y.png", "a/x.png", "b/z.png"] and ds.targets.tolist() == [0, 0, 1]
    assert "a/sub/up: skipped" in caplog.text


def test_imagefolder_still_follows_links_once(tmp_path, caplog):
    outside, linked_class = tmp_path / "outside", tmp_path / "linked_class"
    write_image(outside / "o.png")
    write_image(linked_class / "c.png")
    root = tmp_path / "train"
    write_image(root / "a" / "x.png")
    write_image(root / "b" / "y.png")
    os.symlink(outside, root / "a" / "link1")
    os.symlink(outside, root / "a" / "link2")  # a second link to the same folder: listed once
    os.symlink(root / "b", root / "a" / "to_b")  # another class's folder: its images keep their class
    (root / "c").symlink_to(linked_class, target_is_directory=True)  # a class folder that is a link
    with caplog.at_level(logging.WARNING, logger="visattn.data.imagefolder"):
        ds = ImageFolder(root)
    assert [Path(p).relative_to(root).as_posix() for p in ds.paths] == [
        "a/x.png",
        "a/link1/o.png",
        "b/y.png",
        "c/c.png",
    ]
    assert ds.targets.tolist() == [0, 0, 1, 2]
    assert "a/link2: skipped" in caplog.text and "a/to_b: skipped" in caplog.text
    (root / "d").symlink_to(root / "b", target_is_directory=True)  # two classes, one folder
    with pytest.raises(
        AnnotationError, match=r"train/d: class folder 'd' shares a folder with the class folder 'b'"
    ):
        ImageFolder(root)


# ------------------------------------------------------------------------------------------ mmpretrain JSON
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"metainfo": ["a", "b"], "data_list": []},
            r"mm\.json, metainfo: expected a mapping with 'classes' \(a list of class names\), got a list",
        ),
        ({"data_list": []}, r"mm\.json, metainfo: expected a mapping with 'classes'.*, missing"),
        ({"metainfo": {"classes": "ab"}, "data_list": []}, r"metainfo\.classes: expected a list of distinct"),
        (
            [{"img_path": "x.jpg"}],
            r"mm\.json: expected a JSON object with 'metainfo' and 'data_list', got a list",
        ),
        (
            {"metainfo": {"classes": ["a"]}, "data_list": {"img_path": "x"}},
            r"data_list: expected a list of samples, got a mapping",
        ),
        ({"metainfo": {"classes": ["a"]}}, r"data_list: expected a list of samples, missing"),
        (
            {"metainfo": {"classes": ["a"]}, "data_list": ["x.jpg"]},
            r"data_list\[0\]: expected an object, got a string",
        ),
        (
            {"metainfo": {"classes": ["a"]}, "data_list": [{"gt_label": [0]}]},
            r"data_list\[0\]: missing 'img_path'",
        ),
        (
            {"metainfo": {"classes": ["a"]}, "data_list": [{"img_path": "x.jpg", "gt_label": 0}]},
            r"data_list\[0\]\.gt_label: expected a list of class indices, got 0",
        ),
        (
            {"metainfo": {"classes": ["a"]}, "data_list": [{"img_path": "x.jpg"}]},
            r"data_list\[0\]\.gt_label: expected a list of class indices, missing",
        ),
        (
            {"metainfo": {"classes": ["a"]}, "data_list": [{"img_path": "x.jpg", "gt_label": [1]}]},
            r"data_list\[0\]: class index 1 out of range 0\.\.0",
        ),
    ],
)
def test_mmpretrain_malformed_keys(tmp_path, data, message):
    f = tmp_path / "mm.json"
    f.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=message):
        MultiLabelJSON(f, format="mmpretrain")


def test_native_json_entry_without_path(tmp_path):
    f = tmp_path / "ann.json"
    f.write_text(json.dumps({"classes": ["a"], "samples": [{"positive": ["a"]}]}))
    with pytest.raises(AnnotationError, match=r"ann\.json, samples\[0\]: missing 'path' \(the image path\)"):
        MultiLabelJSON(f)
    f.write_text(json.dumps([1, 2]))
    with pytest.raises(
        AnnotationError, match=r"ann\.json: expected a JSON object with 'classes' and 'samples'"
    ):
        MultiLabelJSON(f)
