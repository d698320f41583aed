"""Fashion-MNIST benchmark: a small SAN and a small CIFAR-style Residual Attention Network on 2 CPU cores.

Trains ``configs/fashion_mnist/{san_small,ran_small}.yaml`` on the official 60k/10k split from the Debian
package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``; files in
``/usr/share/datasets/fashion-mnist``), then evaluates the final weights on the 10k test images and writes
``result.json`` (top-1/top-5, per-class accuracy, confusion matrix, wall time, command, machine) into the run
folder. Results and the published baselines: ``docs/fashion_mnist.md``.

Usage (one model after the other; the machine's allocator settings of the Makefile)::

    export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1000000000000
    python benchmarks/fashion_mnist.py san --threads 1
    python benchmarks/fashion_mnist.py ran --threads 1

Extra ``--set key=value`` overrides are passed to the recipe (e.g. ``--set train.epochs=6 --set
output=runs/fashion_mnist/san_small_6ep``). ``--threads 1`` suits a machine shared with other jobs (two
OpenMP threads then mostly spin-wait for each other); on an idle 2-core machine leave torch's default.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"san": "configs/fashion_mnist/san_small.yaml", "ran": "configs/fashion_mnist/ran_small.yaml"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(RECIPES))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--root", default=None, help="folder of the IDX files (default: the Debian package's)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from visattn.config import load_config
    from visattn.data.factory import FASHION_MNIST_DIR
    from visattn.engine.build import build_datasets, build_model, build_task, num_classes_of
    from visattn.engine.trainer import Trainer
    from visattn.models import count_parameters
    from visattn.utils.distributed import seed_everything

    root = args.root or FASHION_MNIST_DIR
    if not Path(root, "train-images-idx3-ubyte.gz").is_file():
        print(f"Fashion-MNIST not found in {root}: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    # The protocol of this benchmark: train on the whole training split without validation (val_split=train
    # only stops the recipe's held-out selection part from being cut off), then score the test split once.
    overrides = [f"data.kwargs.root={root}", "data.val_split=train", *args.set]
    recipe = ROOT / RECIPES[args.model]
    config = load_config(recipe, overrides)
    threads = [f"--threads {args.threads}"] if args.threads else []
    command = " ".join(
        ["python", "benchmarks/fashion_mnist.py", args.model, *threads, *(f"--set {s}" for s in args.set)]
    )
    print(f"{command}\n  recipe {RECIPES[args.model]}, {torch.get_num_threads()} threads", flush=True)

    t0, c0 = time.perf_counter(), time.process_time()
    seed_everything(config["train"]["seed"])  # as build_trainer: the same initial weights in every run
    data = build_datasets(config, ("train", "test"))
    model = build_model(config, num_classes_of(data["train"]))
    task = build_task(config, model, data["train"])
    # No validation during training: the test set is evaluated once, with the final weights (the cosine
    # schedule runs to the end; nothing is selected on the test set).
    trainer = Trainer(config, model, task, data["train"], None)
    trainer.fit()
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    final = trainer.evaluate(dataset=data["test"])
    total_seconds, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "model": config["model"]["name"],
        "model_kwargs": config["model"]["kwargs"],
        "params": count_parameters(trainer.model),
        "epochs": config["train"]["epochs"],
        "test_top1": final["top1"],
        "test_top5": final["top5"],
        "test_mca": final["mca"],
        "test_nll": final["nll"],
        "per_class_accuracy": dict(
            zip(final.get("class_names", []), final["per_class_accuracy"].tolist(), strict=False)
        ),
        "confusion_matrix": final["confusion_matrix"].tolist(),
        "history": trainer.history,
        "wall_seconds_train": train_seconds,
        "wall_seconds_total": total_seconds,
        "cpu_seconds_train": train_cpu,
        "cpu_seconds_total": total_cpu,
        "command": command,
        "env": {
            "MALLOC_MMAP_MAX_": os.environ.get("MALLOC_MMAP_MAX_"),
            "MALLOC_TRIM_THRESHOLD_": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }
    path = Path(config["output"]) / "result.json"
    path.write_text(json.dumps(out, indent=2))
    print(
        f"{args.model}: test top-1 {100 * final['top1']:.2f} %  top-5 {100 * final['top5']:.2f} %  "
        f"params {out['params']:,}  train {train_seconds / 60:.1f} min (CPU {train_cpu / 60:.1f} min), total {total_seconds / 60:.1f} min  -> {path}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
