"""Single-label classification: metrics (incl. DDP gathering), smoothed CE, mixup, the task, transforms."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from visattn.config import load_config
from visattn.data.transforms import build_transform
from visattn.engine.tasks.classification import (
    SingleLabelTask,
    SmoothedCrossEntropy,
    build_classification_task,
)
from visattn.engine.trainer import Trainer
from visattn.metrics.classification import ClassificationMetrics, classification_metrics, topk_ranks

MP_METHODS = mp.get_all_start_methods()


# ----------------------------------------------------------------------------------------------- metrics
def test_ranks_ties_and_topk():
    scores = torch.tensor([[0.1, 0.5, 0.5, 0.2], [0.3, 0.3, 0.3, 0.3], [0.0, 1.0, 2.0, 3.0]])
    labels = torch.tensor([2, 0, 0])
    # row 0: class 1 ties with the label and has a lower index -> rank 1 (argmax picks class 1)
    assert topk_ranks(scores, labels).tolist() == [1, 0, 3]
    out = classification_metrics(scores, labels, topk=(1, 2, 4, 9))
    assert out["top1"] == pytest.approx(1 / 3) and out["top2"] == pytest.approx(2 / 3)
    assert out["top4"] == 1.0 and out["top9"] == 1.0  # k > C is clipped to C
    assert out["top1"] == float((scores.argmax(1) == labels).double().mean())


def test_per_class_confusion_and_nll():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 4, generator=g)
    labels = torch.randint(0, 3, (50,), generator=g)  # class 3 never occurs
    out = classification_metrics(logits, labels)
    pred = logits.argmax(1)
    cm = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(labels.tolist(), pred.tolist(), strict=True):
        cm[t, p] += 1
    assert torch.equal(out["confusion_matrix"], cm) and out["support"].tolist() == cm.sum(1).tolist()
    per_class = out["per_class_accuracy"]
    assert math.isnan(per_class[3]) and per_class[:3].tolist() == pytest.approx(
        [float(cm[c, c] / cm[c].sum()) for c in range(3)]
    )
    assert out["mca"] == pytest.approx(float(per_class[:3].mean()))
    assert out["nll"] == pytest.approx(float(F.cross_entropy(logits.double(), labels)), abs=1e-12)
    assert out["top5"] == 1.0 and out["num_samples"] == 50


def test_accumulator_batches_indices_and_errors():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(30, 5, generator=g), torch.randint(0, 5, (30,), generator=g)
    want = classification_metrics(logits, labels)
    m = ClassificationMetrics(5, class_names=list("abcde"))
    for part in (slice(0, 7), slice(7, 8), slice(8, 30)):
        m.update(logits[part], labels[part])
    got = m.compute()
    assert got["class_names"] == list("abcde")
    for key in ("top1", "top5", "mca", "nll"):
        assert got[key] == pytest.approx(want[key], abs=1e-12)
    assert torch.equal(got["confusion_matrix"], want["confusion_matrix"])
    m.reset()
    order = torch.cat([torch.arange(30).flip(0), torch.tensor([3, 4, 3])])  # repeats dropped, order restored
    m.update(logits[order].bfloat16().float(), labels[order], indices=order)
    assert m.compute()["num_samples"] == 30
    with pytest.raises(ValueError, match="give indices to every update"):
        m.update(logits, labels)
    with pytest.raises(ValueError, match="expected 5 classes"):
        m.update(logits[:, :3], labels)
    with pytest.raises(ValueError, match=r"labels must lie in 0..4, got 0..5"):
        classification_metrics(logits, torch.tensor([0] * 29 + [5]))
    with pytest.raises(ValueError, match="integer class indices"):
        classification_metrics(logits, labels.float())
    with pytest.raises(ValueError, match="no samples"):
        ClassificationMetrics().compute()
    with pytest.raises(ValueError, match="topk"):
        ClassificationMetrics(topk=(0,))


N_DIST = 11


def _dist_data():
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, 3, (N_DIST, 4), generator=g).float(), torch.randint(0, 4, (N_DIST,), generator=g)


def _dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    scores, labels = _dist_data()
    shard = (list(range(N_DIST)) + [0])[rank::world]  # DistributedSampler(shuffle=False): pads with sample 0
    with_idx, without = ClassificationMetrics(), ClassificationMetrics()
    for part in (shard[:2], shard[2:]):
        with_idx.update(scores[part], labels[part], indices=torch.tensor(part))
        without.update(scores[part], labels[part])
    empty_rank = ClassificationMetrics()
    if rank == 1:
        empty_rank.update(scores, labels)
    out = {"idx": with_idx.compute(), "plain": without.compute(), "uneven": empty_rank.compute()}
    torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.skipif("fork" not in MP_METHODS, reason="needs the fork start method")
def test_distributed_gather_equals_single_process(tmp_path):
    mp.start_processes(
        _dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork"
    )
    scores, labels = _dist_data()
    want = classification_metrics(scores, labels)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for key in ("top1", "top5", "mca", "nll", "num_samples"):
            assert got["idx"][key] == pytest.approx(want[key], abs=1e-12), key
            assert got["uneven"][key] == pytest.approx(want[key], abs=1e-12), key
        assert torch.equal(got["idx"]["confusion_matrix"], want["confusion_matrix"])
        assert got["plain"]["num_samples"] == N_DIST + 1  # the padded repeat counts without indices


# ----------------------------------------------------------------------------------------------- losses
def test_smoothed_cross_entropy_forms():
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    uniform = SmoothedCrossEntropy(0.1)(logits, labels)
    assert uniform == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=0.1)), abs=1e-6)
    target = torch.full((8, 5), 0.1 / 4).scatter_(1, labels.view(-1, 1), 0.9)  # SAN: eps/(K-1) elsewhere
    want = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
    assert SmoothedCrossEntropy(0.1, "others")(logits, labels) == pytest.approx(float(want), abs=1e-6)
    assert SmoothedCrossEntropy(0.0, "others")(logits, labels) == pytest.approx(
        float(F.cross_entropy(logits, labels)), abs=1e-6
    )
    with pytest.raises(ValueError, match="smoothing must be"):
        SmoothedCrossEntropy(0.1, "sideways")


class _Linear(nn.Module):
    def __init__(self, k: int = 4) -> None:
        super().__init__()
        self.num_classes = k
        self.fc = nn.Linear(3 * 4 * 4, k)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_task_mixup_odd_batches_and_eval():
    torch.manual_seed(0)
    model = _Linear()
    images, labels = torch.rand(5, 3, 4, 4), torch.tensor([0, 1, 2, 3, 0])
    plain = SingleLabelTask(4, label_smoothing=0.1)
    with torch.no_grad():
        got = float(plain.training_loss(model, (images, labels), 0))
        assert got == pytest.approx(
            float(F.cross_entropy(model(images), labels, label_smoothing=0.1)), abs=1e-6
        )
    mix = SingleLabelTask(4, label_smoothing=0.1, mixup={"mixup_alpha": 0.4, "cutmix_alpha": 1.0})
    loss = mix.training_loss(model, (images, labels), 0)  # odd batch: last sample dropped, not an error
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert torch.isfinite(mix.training_loss(model, (images[:1], labels[:1]), 0))
    metric = plain.metric_factory()
    plain.evaluate_batch(model, (images, labels, torch.arange(5)), metric)
    assert metric.compute()["num_samples"] == 5
    with pytest.raises(ValueError, match=r"expects batches \(image, label\)"):
        plain.training_loss(model, (images, labels, labels, labels), 0)
    with pytest.raises(ValueError, match=r"\(B,\) integer labels"):
        plain.training_loss(model, (images, torch.rand(5, 4)), 0)
    with pytest.raises(ValueError, match="use smoothing: uniform"):
        SingleLabelTask(4, label_smoothing=0.1, smoothing="others", mixup={"mixup_alpha": 0.2})


def _config(tmp_path, *extra):
    return load_config(
        None,
        [
            "task=classification",
            "model.name=toy",
            "data.name=toy",
            "eval.metric=top1",
            "data.batch_size=8",
            "train.epochs=2",
            "optim.lr=0.5",
            f"output={tmp_path}",
            *extra,
        ],
    )


def test_builder_validates_options(tmp_path):
    model = _Linear()
    task = build_classification_task(_config(tmp_path, "task_kwargs={label_smoothing: 0.1}"), model, None)
    assert task.num_classes == 4 and task.criterion.smoothing == 0.1
    with pytest.raises(ValueError, match=r"unknown task_kwargs \['smooth'\]"):
        build_classification_task(_config(tmp_path, "task_kwargs={smooth: 0.1}"), model, None)
    with pytest.raises(ValueError, match="'eval.metric': 'mAP' is not a metric of task 'classification'"):
        build_classification_task(_config(tmp_path, "eval.metric=mAP"), model, None)


class _Toy(Dataset):
    """Separable 4-class data: the class decides which quadrant of the 4x4 image is bright."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.arange(n) % 4
        self.images = torch.rand(n, 3, 4, 4, generator=g) * 0.2
        for i, c in enumerate(self.targets.tolist()):
            self.images[i, :, 2 * (c // 2) : 2 * (c // 2) + 2, 2 * (c % 2) : 2 * (c % 2) + 2] += 1
        self.class_names = ["a", "b", "c", "d"]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.images[i], int(self.targets[i])


def test_trainer_fits_and_reports_top1(tmp_path):
    torch.manual_seed(0)
    config = _config(tmp_path)
    model, train = _Linear(), _Toy(64, 0)
    task = build_classification_task(config, model, train)
    trainer = Trainer(config, model, task, train, _Toy(32, 1))

    result = trainer.fit()
    assert result["top1"] == 1.0 and result["best"]["metric"] == "top1" and "nll" in result
    final = trainer.evaluate()
    assert final["confusion_matrix"].trace() == 32 and final["class_names"] == ["a", "b", "c", "d"]
    assert (tmp_path / "best.safetensors").is_file()


# ----------------------------------------------------------------------------------------------- transforms
def test_single_label_transforms():
    img = torch.rand(3, 28, 28)
    t = build_transform(True, 32, kind="pad_crop")
    assert t(img).shape == (3, 32, 32)
    ev = build_transform(False, 32, kind="pad_crop")
    assert torch.equal(ev(img), ev(img)) and ev(img).shape == (3, 32, 32)
    x = torch.rand(3, 32, 32)
    assert torch.equal(build_transform(False, 32, kind="pad_crop")(x), x)  # CIFAR eval is the identity
    square = torch.zeros(3, 40, 30)
    square[:, 20, 15] = 1
    out = build_transform(False, 16, kind="imagenet")(square)  # shorter side -> 18, centre crop 16
    assert out.shape == (3, 16, 16)
    assert build_transform(True, 16, kind="imagenet", rrc_scale=(0.08, 1.0))(square).shape == (3, 16, 16)
    ra = build_transform(True, 16, mean=(0.5,), std=(0.25,), kind="pad_crop+rand-m9-mstd0.5")
    gray = ra(torch.rand(1, 16, 16))
    assert gray.shape == (1, 16, 16) and gray.dtype == torch.float32
    rgb = build_transform(True, 16, kind="imagenet+rand-m9-n2")(torch.rand(3, 20, 20))
    assert rgb.shape == (3, 16, 16)
    assert build_transform(False, 16, kind="imagenet+rand-m9")(square).shape == (3, 16, 16)  # eval: no RA
    with pytest.raises(ValueError, match="train transform must be one of"):
        build_transform(True, 16, kind="cutout")
    with pytest.raises(ValueError, match="RandAugment string"):
        build_transform(True, 16, kind="imagenet+autoaug")
    legacy = build_transform(False, 16)(torch.rand(3, 20, 24))  # existing kinds unchanged: square resize
    assert legacy.shape == (3, 16, 16)
