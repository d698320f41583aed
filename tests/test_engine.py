"""Trainer guarantees: exact resume, and two-process DDP (gloo, CPU) equal to one process."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from visattn.config import load_config
from visattn.engine.build import build_trainer

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "glyph_canvas_csra.yaml"


def _config(out: Path, batch: int, *extra: str) -> dict:
    return load_config(
        RECIPE,
        [
            "data.kwargs.num_samples={train: 128, val: 32, test: 64}",
            f"data.batch_size={batch}",
            "train.epochs=2",
            f"output={out}",
            *extra,
        ],
    )


def _numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, float) and k not in ("epoch_seconds",)}


def test_stopped_and_resumed_run_equals_uninterrupted(tmp_path):
    torch.set_num_threads(1)
    full = build_trainer(_config(tmp_path / "full", 32)).fit()

    first = build_trainer(_config(tmp_path / "split", 32))
    first.fit(until_epoch=1)
    assert (tmp_path / "split" / "checkpoints" / "last.txt").read_text().strip() == "epoch_0001"
    resumed = build_trainer(_config(tmp_path / "split", 32)).fit(resume="auto")

    assert _numbers(resumed) == _numbers(full)  # bit-identical on one CPU thread
    assert resumed["best"] == full["best"]
    assert len((tmp_path / "split" / "log.csv").read_text().splitlines()) == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# BatchNorm statistics are per process under DDP (SyncBatchNorm is CUDA-only), so the equality test uses
# GroupNorm; everything else (samples per global step, gradient averaging, metric gathering) is the same.
NO_BATCH_STATS = ("model.kwargs.norm_layer=groupnorm",)


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)},
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    try:
        result = build_trainer(_config(Path(out), 16, *NO_BATCH_STATS)).fit()
        if rank == 0:
            (Path(out) / "result.json").write_text(json.dumps(_numbers(result)))
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path):
    torch.set_num_threads(1)
    single = _numbers(build_trainer(_config(tmp_path / "one", 32, *NO_BATCH_STATS)).fit())
    out = tmp_path / "two"
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(out)), nprocs=2, start_method="fork")
    double = json.loads((out / "result.json").read_text())
    assert set(double) == set(single)
    for key, value in single.items():
        # Same samples per global step; only the float summation order differs.
        assert double[key] == pytest.approx(value, abs=2e-4), key
