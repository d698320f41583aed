"""``visattn bench``, its measuring helpers, and the CLI's allocator setting (no timed assertions)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from visattn import bench
from visattn.cli import main
from visattn.utils import allocator as _allocator

TIMM_COLUMNS = (
    "infer_samples_per_sec",
    "infer_step_time",
    "infer_batch_size",
    "infer_img_size",
    "infer_gmacs",
)
SAN_SMALL = ["--set", "layers=[1,1,1,1,1]", "--set", "kernels=[3,3,3,3,3]", "--set", "num_classes=10"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No allocator change in this process and no matmul-peak cache outside tmp_path."""
    monkeypatch.setattr(_allocator, "_applied", None)
    monkeypatch.setenv("VISATTN_CACHE_DIR", str(tmp_path / "cache"))
    yield


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_bench_cli_writes_timm_columns_and_memory(tmp_path, capsys):
    out = tmp_path / "bench.csv"
    argv = ["bench", "glyphnet", "--img-size", "32", "--batch-size", "2", "--warmup", "1", "--iters", "2"]
    argv += ["--mode", "both", "--allocator", "system", "--peak-gflops", "50", "--csv", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "allocator" in text and "MFU" in text and "samples/s" in text
    rows = _read(out)
    assert [r["model"] for r in rows] == ["glyphnet", "glyphnet"]
    infer, train = rows
    for col in ("model", "param_count", *TIMM_COLUMNS, "infer_peak_mem_mb", "infer_mfu", "allocator"):
        assert infer[col] != "", col
    for col in ("train_samples_per_sec", "train_step_time", "train_gmacs", "train_peak_mem_mb", "train_mfu"):
        assert train[col] != "", col
    assert infer["infer_batch_size"] == "2" and infer["infer_img_size"] == "32"
    assert float(infer["param_count"]) == pytest.approx(0.25, abs=0.05)  # millions, as timm
    assert float(train["train_peak_mem_mb"]) > float(infer["infer_peak_mem_mb"]) > 0
    # MFU = 2 · MACs · samples/s (× 3 for training) / measured peak.
    for r, p, factor in ((infer, "infer", 1), (train, "train", 3)):
        gmacs = float(r[f"{p}_gmacs"])  # rounded to 3 decimals in the CSV
        want = 2 * factor * gmacs * float(r[f"{p}_samples_per_sec"]) / 50
        assert float(r[f"{p}_mfu"]) == pytest.approx(want, rel=0.0006 / gmacs + 0.01, abs=2e-4)
    assert infer["allocator"].startswith(("system", "environment"))


def test_bench_san_reports_both_conventions_and_options(tmp_path):
    out = tmp_path / "san.csv"
    argv = ["bench", "san10_pairwise", "--img-size", "64", "--batch-size", "1", "--warmup", "0"]
    argv += ["--iters", "1", "--precision", "bf16", "--channels-last", "--allocator", "system"]
    argv += ["--peak-gflops", "50", "--no-memory", "--csv", str(out), *SAN_SMALL]
    assert main(argv) == 0
    (row,) = _read(out)
    assert float(row["infer_gmacs_san"]) > float(row["infer_gmacs"]) > 0
    assert row["precision"] == "bf16" and row["channels_last"] == "True" and row["peak_dtype"] == "bfloat16"
    assert row["infer_peak_mem_mb"] == ""


def test_bench_unknown_model_and_errors(capsys):
    assert main(["bench", "no_such_model*", "--allocator", "system"]) == 2
    assert "no visattn model matches" in capsys.readouterr().err
    # A model that fails (reflect padding too large at 32 px) is reported, not raised.
    argv = ["bench", "san10_pairwise", "--img-size", "32", "--iters", "1", "--warmup", "0"]
    assert main([*argv, "--allocator", "system", "--peak-gflops", "1", "--no-memory"]) == 1
    assert "error" in capsys.readouterr().out


def test_peak_tensor_memory_counts_only_the_call():
    before = torch.ones(1 << 20)  # 4 MiB that exists before the call and is freed inside it

    def fn():
        nonlocal before
        before = None
        a = torch.ones(1 << 20)  # 4 MiB
        b = torch.ones(1 << 21)  # 8 MiB, both alive: 12 MiB
        del a, b
        return torch.ones(1 << 18)  # 1 MiB, returned

    result, peak = bench.peak_tensor_memory(fn)
    assert result.numel() == 1 << 18
    assert 12 * 2**20 <= peak < 13 * 2**20


def test_peak_rss_and_time_steps():
    calls = []
    with bench.PeakRSS() as rss:
        times = bench.time_steps(lambda: calls.append(torch.ones(1 << 22).sum()), warmup=2, iters=3)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)
    if rss.peak_bytes is not None:
        assert rss.peak_bytes >= rss.increase_bytes >= 0


def test_matmul_peak_is_measured_once_and_cached(tmp_path, monkeypatch):
    first = bench.matmul_peak_gflops(size=64, repeats=2)
    assert first > 0
    cache = json.loads((tmp_path / "cache" / "matmul_peak.json").read_text())
    assert len(cache) == 1 and "float32" in next(iter(cache))

    def no_timing(*a, **k):
        raise AssertionError("the cached value must be used")

    monkeypatch.setattr(bench, "time_steps", no_timing)
    assert bench.matmul_peak_gflops(size=64) == pytest.approx(first, rel=0.01)


# ---------------------------------------------------------------------------------------------- allocator

_PROBE = textwrap.dedent(
    """
    import ctypes, json, os, sys

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def big_block_is_mmapped():
        before = libc.mallinfo2().hblkhd
        p = libc.malloc(64 << 20)
        mapped = libc.mallinfo2().hblkhd > before
        libc.free(p)
        return mapped

    env_before = dict(os.environ)
    if sys.argv[1] == "full":  # the whole package, the CLI and its plugins
        import visattn, visattn.bench, visattn.cli
        visattn.cli.build_parser()
        from visattn.utils.allocator import apply_allocator_setting
    else:  # the allocator module alone (no torch import: fast)
        import importlib.util
        spec = importlib.util.spec_from_file_location("alloc", sys.argv[2])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        apply_allocator_setting = module.apply_allocator_setting
    report = {"env_unchanged": dict(os.environ) == env_before, "mapped_after_import": big_block_is_mmapped()}
    mode = sys.argv[3] if len(sys.argv) > 3 else None
    report["setting"] = apply_allocator_setting(mode)
    report["mapped_after_apply"] = big_block_is_mmapped()
    report["exported"] = {k: os.environ.get(k) for k in ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")}
    print(json.dumps(report))
    """
)

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or _allocator._libc() is None, reason="needs glibc"
)


def _probe(what, mode=None, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "VISATTN_ALLOCATOR"}
    env.update(env_extra)
    args = [what, _allocator.__file__] + ([mode] if mode else [])
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@glibc_only
def test_import_changes_nothing_and_tuned_keeps_large_blocks_in_the_heap():
    report = _probe("full", "tuned")
    assert report["env_unchanged"] and report["mapped_after_import"]  # importing visattn: glibc defaults
    assert report["setting"].startswith("tuned")
    assert not report["mapped_after_apply"]  # M_MMAP_MAX=0: no fresh mapping per large tensor
    assert report["exported"] == _allocator.TUNED_ENV  # inherited by child processes


@glibc_only
def test_system_mode_and_environment_override():
    report = _probe("module", VISATTN_ALLOCATOR="system")
    assert report["setting"].startswith("system") and report["mapped_after_apply"]
    report = _probe("module", "tuned", MALLOC_MMAP_THRESHOLD_="1000000000")  # a user's own setting wins
    assert report["setting"].startswith("environment") and "MALLOC_MMAP_THRESHOLD_" in report["setting"]


def test_allocator_precedence_without_touching_malloc(monkeypatch):
    for key in list(os.environ):
        if key.startswith("MALLOC_") or key in ("VISATTN_ALLOCATOR", "LD_PRELOAD", "GLIBC_TUNABLES"):
            monkeypatch.delenv(key)
    assert _allocator.describe_environment() is None
    assert _allocator.describe_environment({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}).startswith(
        "environment"
    )
    assert "MALLOC_TRIM_THRESHOLD_" in _allocator.describe_environment({"MALLOC_TRIM_THRESHOLD_": "1"})
    assert "glibc.malloc" in _allocator.describe_environment({"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0"})
    monkeypatch.setenv("VISATTN_ALLOCATOR", "bogus")
    with pytest.raises(ValueError, match="allocator mode"):
        _allocator.apply_allocator_setting()
    monkeypatch.setenv("VISATTN_ALLOCATOR", "system")
    assert _allocator.apply_allocator_setting() == "system (glibc defaults)"
    assert _allocator.apply_allocator_setting("tuned") == "system (glibc defaults)"  # first call decides
    assert _allocator.allocator_setting() == "system (glibc defaults)"
