"""Every multi-label / attribute recipe in ``configs/`` trains and evaluates on fixture-sized data in its real
format.

Each recipe runs through ``visattn train`` and ``visattn eval`` (``visattn.cli.main``) with only what must
change to be fast overridden: the data location (a tiny fixture written by ``tests/data_fixtures.py``),
64-px inputs (VAA: 32), batch 2, one step of one epoch, no loader workers, and a tiny backbone through the
generic model names (``csra`` / ``vaa``) keeping the recipe's head settings (heads, λ, temperatures, VAA
layout). Everything else — dataset name and options, transforms, loss, optimiser, per-group learning rates,
scheduler, task and metric — is the recipe's own, so a bad key or an unknown dataset/loss/scheduler/metric
fails here. The recipe's real model (name and arguments, weight files left out) is built separately on the
meta device, and the learning-rate schedules of the official recipes are checked against the official
formulas.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import VOC_OBJECTS, make_coco, make_voc, make_wider, pa100k_mat, peta_mat, write_image
from torch import nn

import visattn
from visattn.cli import main
from visattn.config import load_config
from visattn.engine.optim import build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parents[1]
PATTERNS = ("csra_*.yaml", "vaa_*.yaml", "glyph_canvas_*.yaml", "multilabel_*")
RECIPES = sorted({p for pattern in PATTERNS for p in (ROOT / "configs").glob(pattern)})
IMG = 64
# VAA: resnet18 at 32 px; its full-extent f_sr convs grow with the map (released: 24 M parameters, 38 M at 64)
IMG_VAA = 32
# Model arguments that name weight files: dropped for the tiny and meta-device models.
WEIGHT_KEYS = ("pretrained_backbone", "backbone_pretrained_file", "pretrained_file", "checkpoint_path")
CSRA_HEAD_KEYS = ("num_heads", "lam", "temperatures", "normalize")
VAA_HEAD_KEYS = ("layout", "sr_pool", "att_channels", "sr_channels", "init", "global_pool", "drop_rate")


# ------------------------------------------------------------------------------------- data fixtures
def _voc(root: Path) -> dict:
    from visattn.data.voc import VOC_CLASSES

    expected = {}
    for image_id, objects in VOC_OBJECTS.items():
        row = np.full(len(VOC_CLASSES), -1, np.int8)
        for name, difficult in objects:
            c = VOC_CLASSES.index(name)
            row[c] = 1 if not difficult or row[c] == 1 else 0
        expected[image_id] = row
    make_voc(root, expected)
    return {"root": str(root / "VOCdevkit")}


def _coco(root: Path) -> dict:
    make_coco(root)  # val2014 only: the train split reuses it under the train2014 names
    ann = root / "annotations"
    shutil.copy(ann / "instances_val2014.json", ann / "instances_train2014.json")
    shutil.copytree(root / "val2014", root / "train2014")
    return {"root": str(root)}


def _wider(root: Path) -> dict:
    make_wider(root)  # trainval only: the test split reuses it
    ann = root / "Annotations"
    shutil.copy(ann / "wider_attribute_trainval.json", ann / "wider_attribute_test.json")
    return {"root": str(root)}


def _wider_srn(root: Path) -> dict:
    """SRN's lists: ``wider_att_{train,test}_{imglist,label}.txt``; val persons sit under ``…/val/…``."""
    a = [1, -1] * 7
    b = [-v for v in a]
    lists = {
        "train": [
            ("wider/Image/train/0--Parade/p0.png", a),
            ("wider/Image/train/0--Parade/p1.png", b),
            ("wider/Image/train/1--Handshaking/p2.png", [0] * 7 + [1] * 7),
            ("wider/Image/val/2--Demonstration/p3.png", a),
            ("wider/Image/val/2--Demonstration/p4.png", b),
        ],
        "test": [
            ("wider/Image/test/3--Riot/p5.png", a),
            ("wider/Image/test/3--Riot/p6.png", [0] * 14),
            ("wider/Image/test/4--Dancing/p7.png", b),
        ],
    }
    root.mkdir(parents=True, exist_ok=True)
    k = 0
    for split, rows in lists.items():
        (root / f"wider_att_{split}_imglist.txt").write_text("".join(f"{p}\n" for p, _ in rows))
        (root / f"wider_att_{split}_label.txt").write_text(
            "".join(" ".join(map(str, r)) + "\n" for _, r in rows)
        )
        for path, _ in rows:
            write_image(root / path, k)
            k += 1
    return {"root": str(root)}


def _peta(root: Path) -> dict:
    labels, _, _ = peta_mat(root)
    for i in range(labels.shape[0]):
        write_image(root / "images" / f"{i + 1:05d}.png", i)
    return {"root": str(root)}


def _pa100k(root: Path) -> dict:
    mat = pa100k_mat(root, sizes=(4, 2, 2))
    for part in ("train", "val", "test"):
        for k, cell in enumerate(mat[f"{part}_images_name"][:, 0]):
            write_image(root / "data" / str(cell[0]), k)
    return {"root": str(root)}


def _multilabel_csv(root: Path) -> dict:
    classes = ["cat", "dog", "bird"]
    rows = {
        "train": [("img/a.png", [1, 0, 0]), ("img/b.png", [0, 1, 1]), ("img/c.png", [1, 1, 0])],
        "test": [("img/d.png", [0, 0, 1]), ("img/e.png", [1, 0, 1])],
    }
    files = {}
    k = 0
    for split, items in rows.items():
        files[split] = str(root / f"{split}.csv")
        root.mkdir(parents=True, exist_ok=True)
        with open(files[split], "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", *classes])
            for path, labels in items:
                writer.writerow([path, *labels])
                write_image(root / path, k)
                k += 1
    return {"files": files}


def _glyph_canvas(root: Path) -> dict:
    return {"num_samples": {"train": 16, "val": 16, "test": 16}}


FIXTURES = {
    "voc2007": _voc,
    "coco2014": _coco,
    "wider_attribute": _wider,
    "wider_attribute_srn": _wider_srn,
    "peta": _peta,
    "pa100k": _pa100k,
    "multilabel_csv": _multilabel_csv,
    "glyph_canvas": _glyph_canvas,
}


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory):
    """``fixture_data(name)`` -> ``data.kwargs`` entries pointing at that dataset's fixture (built once)."""
    built: dict[str, dict] = {}
    base = tmp_path_factory.mktemp("recipe_data")

    def get(name: str) -> dict:
        if name not in FIXTURES:
            pytest.fail(f"no fixture for dataset {name!r}: add a writer to FIXTURES in {Path(__file__).name}")
        if name not in built:
            built[name] = FIXTURES[name](base / name)
        return built[name]

    return get


# ------------------------------------------------------------------------------------- overrides
def _set(key: str, value) -> list[str]:
    return ["--set", f"{key}={json.dumps(value)}"]  # JSON is YAML: paths and mappings parse exactly


def tiny_model_overrides(config: dict) -> list[str]:
    """A tiny backbone through the generic model names, keeping the recipe's head settings."""
    name, kwargs = config["model"]["name"], config["model"]["kwargs"]
    if config["data"]["name"] == "glyph_canvas":
        return []  # the demo recipes are tiny already
    if name.startswith("csra"):
        token_model = "vit" in name or "vit" in str(kwargs.get("backbone", ""))
        tiny = {"backbone": "test_vit" if token_model else "test_resnet"}
        tiny.update({k: kwargs[k] for k in CSRA_HEAD_KEYS if k in kwargs})
        return _set("model.name", "csra") + _set("model.kwargs", {"_delete_": True, **tiny})
    if name.startswith("vaa"):
        # resnet18: the released layout taps a block inside layer3, which needs >= 2 blocks there
        tiny = {"backbone": "resnet18", "img_size": IMG_VAA}
        tiny.update({k: kwargs[k] for k in VAA_HEAD_KEYS if k in kwargs})
        return _set("model.name", "vaa") + _set("model.kwargs", {"_delete_": True, **tiny})
    pytest.fail(f"no tiny stand-in for model {name!r}: extend tiny_model_overrides")


def _id(path: Path) -> str:
    return path.stem


def test_recipes_are_found():
    names = {p.name for p in RECIPES}
    assert {"csra_voc2007_resnet101.yaml", "csra_coco2014_resnet101.yaml", "csra_wider_vit_b16.yaml"} <= names
    assert {"vaa_wider_resnet101.yaml", "vaa_peta_resnet101.yaml", "vaa_pa100k_resnet101.yaml"} <= names


def fast_overrides(config: dict, data_kwargs: dict) -> list[str]:
    """Fixture data, 64 px (VAA 32), batch 2, no workers, a tiny backbone; the rest stays the recipe's."""
    args = []
    for key, value in data_kwargs.items():
        args += _set(f"data.kwargs.{key}", value)
    img = IMG_VAA if config["model"]["name"].startswith("vaa") else IMG
    args += _set("data.img_size", img) + _set("data.batch_size", 2) + _set("data.eval_batch_size", 4)
    args += _set("data.workers", 0)
    return args + tiny_model_overrides(config)


def _finite_metric(rows: dict, key: str, recipe: Path) -> None:
    assert key in rows, f"{recipe.name}: no {key!r} among {sorted(rows)}"
    assert math.isfinite(float(rows[key])), f"{recipe.name}: {key} = {rows[key]}"


@pytest.mark.parametrize("recipe", RECIPES, ids=_id)
def test_recipe_trains_on_fixture_data(recipe, fixture_data, tmp_path, capsys):
    """``visattn train`` for one step, then ``visattn eval`` of its best checkpoint as the header says."""
    config = load_config(recipe)  # a bad key fails here already, naming the file and key
    fast = fast_overrides(config, fixture_data(config["data"]["name"]))
    out = tmp_path / "run"
    train = _set("output", str(out)) + _set("train.epochs", 1) + _set("train.max_steps_per_epoch", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny splits: undefined per-class metrics; timm's plateau notice
        code = main(["train", str(recipe), *fast, *train])
    assert code == 0, f"{recipe.name}: visattn train returned {code}: {capsys.readouterr().err}"
    assert (out / "checkpoints" / "epoch_0001.safetensors").is_file()
    assert (out / "checkpoints" / "epoch_0001.state.pt").is_file()
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    metric = config["eval"]["metric"]
    for key in ("train_loss", "lr", metric):
        _finite_metric(rows[0], key, recipe)

    report = tmp_path / "eval.json"
    evaluate = ["--checkpoint", str(out / "best.safetensors"), "--output", str(report)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["eval", str(recipe), *evaluate, *fast])
    assert code == 0, f"{recipe.name}: visattn eval returned {code}: {capsys.readouterr().err}"
    _finite_metric(json.loads(report.read_text()), metric, recipe)


def test_eval_builds_without_a_training_split(fixture_data, capsys):
    recipe = ROOT / "configs" / "vaa_wider_resnet101.yaml"
    config = load_config(recipe)
    fast = fast_overrides(config, fixture_data(config["data"]["name"]))
    # Initial weights are scored only on request (a forgotten --checkpoint must not print a random model's mAP).
    assert main(["eval", str(recipe), *fast]) == 2
    assert "--random-init" in capsys.readouterr().err
    code = main(["eval", str(recipe), *fast, "--random-init"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("recipe", RECIPES, ids=_id)
def test_recipe_model_builds(recipe):
    """The recipe's own model name and arguments (without weight files), on the meta device."""
    config = load_config(recipe)
    kwargs = {k: v for k, v in config["model"]["kwargs"].items() if k not in WEIGHT_KEYS}
    with torch.device("meta"):
        model = visattn.create_model(config["model"]["name"], **kwargs)
    img = config["data"]["img_size"]
    if hasattr(model, "img_size"):  # VAA: the full-extent f_sr conv fixes the input size
        assert tuple(model.img_size) == (img, img), f"{recipe.name}: model img_size != data.img_size"
    if config["optim"]["head_lr_mult"] != 1.0:
        heads = [
            n for n, _ in model.named_parameters() if any(k in n for k in config["optim"]["head_keywords"])
        ]
        assert heads and all(n.startswith("classifier.") for n in heads), heads[:5]


# ------------------------------------------------------------------------------------- schedules
class _TwoGroups(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.classifier = nn.Linear(2, 2)


def _lrs(config: dict, epochs: int, updates: int, metrics=None) -> list[list[tuple[float, float]]]:
    """(backbone, head) learning rate of every iteration, driven the way the trainer drives the scheduler."""
    optimizer = build_optimizer(_TwoGroups(), config["optim"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scheduler = build_scheduler(optimizer, config["sched"], epochs, updates)
    out = []
    for epoch in range(epochs):
        row = []
        for step in range(updates):
            row.append(tuple(g["lr"] for g in optimizer.param_groups))
            scheduler.step_update(epoch * updates + step + 1)
        scheduler.step(epoch + 1, None if metrics is None else metrics[epoch])
        out.append(row)
    return out


@pytest.mark.parametrize(
    "recipe, step",
    [("csra_voc2007_resnet101.yaml", 4), ("csra_coco2014_resnet101.yaml", 5), ("csra_wider_vit_b16.yaml", 5)],
)
def test_csra_schedule_is_the_official_one(recipe, step):
    """Warm-up lr = base·t/(2·iters) from t = 0 (first iteration at lr 0), then StepLR(step, 0.1) counted from
    epoch 1 and stepped after every epoch; the heads (``classifier``) at 10× (Kevinz-code/CSRA main.py)."""
    config = load_config(ROOT / "configs" / recipe)
    base, updates = 0.01, 3
    lrs = _lrs(config, 30, updates)
    for epoch in range(30):
        for it in range(updates):
            t = epoch * updates + it
            want = base * t / (2 * updates) if epoch < 2 else base * 0.1 ** (epoch // step)
            backbone, head = lrs[epoch][it]
            assert backbone == pytest.approx(want, rel=1e-9, abs=1e-15), (epoch + 1, it)
            assert head == pytest.approx(10 * want, rel=1e-9, abs=1e-15), (epoch + 1, it)


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES if p.name.startswith("vaa_")))
def test_vaa_schedule_is_the_official_one(recipe):
    """lr 1e-4; ÷10 once the val metric has not improved for more than 10 epochs; at most 3 drops."""
    config = load_config(ROOT / "configs" / recipe)
    metrics = [0.5] + [0.4] * 59  # best at epoch 1, never improved again
    lrs = [row[0][0] for row in _lrs(config, 60, 1, metrics)]
    drops = [e + 1 for e in range(1, 60) if lrs[e] < lrs[e - 1] * 0.5]
    assert lrs[0] == pytest.approx(1e-4)
    assert drops == [13, 24, 35]  # bad epochs 2-12 (11 > patience 10) → epoch 13 at 1e-5, and so on
    assert lrs[-1] == pytest.approx(1e-7)
