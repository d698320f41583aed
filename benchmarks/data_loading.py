"""Data-loading throughput against train-step throughput (a benchmark, not a test).

Answers "is the loader the bottleneck?" for a recipe (default: the demo, ``configs/glyph_canvas_csra.yaml``):

1. **loader only** — samples/s through a ``DataLoader`` with the recipe's dataset, training transform and
   batch size, for each ``--workers`` value (the first batch, i.e. worker start-up, is timed separately);
2. **train step** — samples/s of forward + loss + backward + optimiser step on batches already in memory
   (the recipe's model, task/loss and optimiser);
3. **train loop** — the two together: steps pulling their batches from the loader, per ``--workers`` value.

The loader is not the bottleneck when (1) is well above (2) and (3) is close to (2). Wall-clock numbers
are the best of ``--repeats`` interleaved runs; on a shared machine they depend on the other load, so the
CPU time per sample of loading (workers=0) and of a train step is printed as well: their ratio does not.

``--jpeg N`` adds a file-backed case: N demo canvases written as RGB JPEGs of ``--jpeg-size`` pixels with a
wide CSV, read back through ``multilabel_csv`` (PIL decode) with CSRA's official training transform
(flip → RandomResizedCrop(scale 0.7-1) → Resize), loader only — the decode + augmentation cost of the
real-image recipes.

Usage (2 cores; the allocator settings are the Makefile's)::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000 \\
        .venv/bin/python benchmarks/data_loading.py --workers 0 2 --jpeg 256
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import torch
from torch.utils.data import DataLoader

from visattn.config import load_config
from visattn.engine.build import build_datasets, build_model, build_task, num_classes_of
from visattn.engine.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _loader(dataset, batch_size: int, workers: int, seed: int) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        drop_last=True,
    )


def loader_throughput(dataset, batch_size: int, workers: int, batches: int, seed: int = 0) -> dict:
    """Samples/s over ``batches`` batches after the first one; the first batch's latency separately."""
    loader = _loader(dataset, batch_size, workers, seed)
    batches = min(batches, len(loader) - 1)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    t1, c1 = time.perf_counter(), time.process_time()
    n = 0
    for _, batch in zip(range(batches), it, strict=False):
        n += batch[0].shape[0]
    t2, c2 = time.perf_counter(), time.process_time()
    del it
    # CPU time of this process: the whole loading cost with workers=0 (workers run in other processes)
    return {"startup_s": t1 - t0, "samples_per_s": n / (t2 - t1), "cpu_ms": 1e3 * (c2 - c1) / n, "samples": n}


def _step(task, module, optimizer, batch) -> None:
    loss = task.training_loss(module, batch, 0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class TrainSteps:
    """The recipe's model, task (loss) and optimiser, built once; timed steps from memory or from a loader."""

    def __init__(self, config: dict, dataset) -> None:
        torch.manual_seed(config["train"]["seed"])
        self.config, self.dataset = config, dataset
        self.model = build_model(config, num_classes_of(dataset)).train()
        self.task = build_task(config, self.model, dataset)
        self.module = self.task.train_module(self.model)
        self.optimizer = build_optimizer(self.model, config["optim"])
        self.batch_size = config["data"]["batch_size"]

    def step(self, batch) -> None:
        _step(self.task, self.module, self.optimizer, batch)

    def cached(self, steps: int, warmup: int = 2) -> tuple[float, float]:
        """Samples/s and CPU ms/sample of training steps on batches held in memory (no loading cost)."""
        loader = _loader(self.dataset, self.batch_size, 0, 0)
        batches = [b for _, b in zip(range(steps + warmup), loader, strict=False)]
        for batch in batches[:warmup]:
            self.step(batch)
        t0, c0 = time.perf_counter(), time.process_time()
        for batch in batches[warmup:]:
            self.step(batch)
        t1, c1 = time.perf_counter(), time.process_time()
        n = sum(b[0].shape[0] for b in batches[warmup:])
        return n / (t1 - t0), 1e3 * (c1 - c0) / n

    def fed(self, workers: int, steps: int) -> float:
        """Samples/s of training steps pulling their batches from the loader (first batch excluded)."""
        loader = _loader(self.dataset, self.batch_size, workers, 0)
        it = iter(loader)
        self.step(next(it))  # worker start-up
        t0 = time.perf_counter()
        n = 0
        for _, batch in zip(range(min(steps, len(loader) - 1)), it, strict=False):
            self.step(batch)
            n += batch[0].shape[0]
        elapsed = time.perf_counter() - t0
        del it
        return n / elapsed


def jpeg_dataset(source, count: int, size: int, folder: Path):
    """``count`` canvases of ``source`` as ``size``-px RGB JPEGs + a wide CSV, read by ``multilabel_csv``."""
    from PIL import Image

    from visattn.data import build_transform, create_dataset

    names = [str(c) for c in source.class_names]
    lines = ["path," + ",".join(names)]
    for i in range(count):
        image = source.images[i].numpy()
        Image.fromarray(image).convert("RGB").resize((size, size), Image.BILINEAR).save(
            folder / f"{i:05d}.jpg", quality=90
        )
        lines.append(f"{i:05d}.jpg," + ",".join(str(int(v)) for v in source.targets[i]))
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    transform = build_transform(True, size, kind="flip_rrc", rrc_scale=(0.7, 1.0))
    return create_dataset(
        "multilabel_csv",
        split="train",
        transform=transform,
        files={"train": folder / "train.csv"},
        encoding="binary",
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "glyph_canvas_csra.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batches", type=int, default=30, help="timed loader batches")
    p.add_argument("--steps", type=int, default=10, help="timed train steps (cached and loader-fed)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best is reported")
    p.add_argument("--jpeg", type=int, default=0, help="also time N file-backed JPEGs (0: skip)")
    p.add_argument("--jpeg-size", type=int, default=448)
    args = p.parse_args(argv)
    if 0 < args.jpeg < 256:
        p.error(
            "--jpeg needs >= 256 images (16 batches): shorter runs only time the workers' prefetched batches"
        )

    config = load_config(args.config, args.set)
    d = config["data"]
    train = build_datasets(config, ("train",))["train"]
    env = {
        k: os.environ.get(k, "unset")
        for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")
    }
    print(f"recipe     {args.config} ({d['name']}, {len(train)} train samples, batch {d['batch_size']}, ")
    print(
        f"           img {d['img_size']}, transform {d['train_transform']!r}, model {config['model']['name']})"
    )
    print(
        f"machine    {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, python {platform.python_version()}"
    )
    print("env        " + ", ".join(f"{k}={v}" for k, v in env.items()))
    print(f"load       {_load()} (1, 5, 15 min) before the runs")

    steps = TrainSteps(config, train)
    loader, fed, cached = {w: [] for w in args.workers}, {w: [] for w in args.workers}, []
    startup, loader_cpu, step_cpu = {w: [] for w in args.workers}, [], []
    for _ in range(args.repeats):  # interleaved, so that load from other processes hits every case alike
        for w in args.workers:
            r = loader_throughput(train, d["batch_size"], w, args.batches)
            loader[w].append(r["samples_per_s"])
            startup[w].append(r["startup_s"])
            if w == 0:
                loader_cpu.append(r["cpu_ms"])
        speed, cpu = steps.cached(args.steps)
        cached.append(speed)
        step_cpu.append(cpu)
        for w in args.workers:
            fed[w].append(steps.fed(w, args.steps))
    step = max(cached)
    print(f"(best of {args.repeats} interleaved repeats; median in brackets; load average {_load()})")
    for w in args.workers:
        print(
            f"loader only     workers={w}: {max(loader[w]):9.0f} samples/s [{median(loader[w]):7.0f}]"
            f"  first batch {min(startup[w]):.2f} s"
        )
    print(f"train step      cached     : {step:9.0f} samples/s [{median(cached):7.0f}]")
    for w in args.workers:
        print(
            f"train loop      workers={w}: {max(fed[w]):9.0f} samples/s [{median(fed[w]):7.0f}]"
            f"  {max(fed[w]) / step:.0%} of the cached step"
        )
    for w in args.workers:
        print(f"loader / step   workers={w}: {max(loader[w]) / step:9.1f}x (wall clock)")
    if loader_cpu:  # CPU time per sample does not depend on what else runs on the machine
        lc, sc = min(loader_cpu), min(step_cpu)
        print(
            f"CPU per sample  loading {lc:.3f} ms, train step {sc:.2f} ms: loading = {lc / sc:.1%} of a step"
        )

    if args.jpeg:
        with tempfile.TemporaryDirectory() as tmp:
            files = jpeg_dataset(train, args.jpeg, args.jpeg_size, Path(tmp))
            batch = 16
            for w in args.workers:
                rs = [loader_throughput(files, batch, w, args.jpeg // batch) for _ in range(args.repeats)]
                r = max(rs, key=lambda x: x["samples_per_s"])
                cpu = f", CPU {min(x['cpu_ms'] for x in rs):.1f} ms/sample" if w == 0 else ""
                print(
                    f"JPEG {args.jpeg_size}px flip_rrc, batch {batch}, loader only workers={w}: "
                    f"{r['samples_per_s']:8.0f} samples/s  (first batch {r['startup_s']:.2f} s{cpu})"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
