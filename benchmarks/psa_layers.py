"""PSA layers vs a straightforward implementation of the same formulas (target: no slower).

    python benchmarks/psa_layers.py [--batch-size 8] [--rounds 7] [--threads N] [--allocator tuned|system]
        [--json OUT]

``visattn.layers.PolarizedSelfAttention`` (paper variant, parallel and sequential layouts) against
:class:`NaivePSA` below, which computes the paper's formulas literally: every 1×1 convolution on the full
feature map, then the softmax-weighted sums (Liu et al. 2021, eqs. 1–5). Both share the same weights;
outputs are checked equal before timing. Shapes: the bottleneck widths and resolutions of a ResNet-50
at 224 px. Forward (no gradients) and forward+backward, float32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import fmt, measure_interleaved, print_table, run_worker, setup_worker  # noqa: E402

SHAPES = ((64, 56), (128, 28), (256, 14), (512, 7))


class NaivePSA(nn.Module):
    """The paper's PSA formulas, written out directly (weights copied from a visattn layer)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layout = layer.layout
        ch, sp = layer.channel, layer.spatial
        self.wq_ch, self.wv_ch, self.wz, self.ln = ch.query, ch.value, ch.up, ch.norm
        self.wq_sp, self.wv_sp = sp.query, sp.value

    def channel(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = self.wq_ch(x).view(B, 1, H * W).softmax(dim=-1)  # (B, 1, L)
        v = self.wv_ch(x).view(B, -1, H * W)  # (B, C/2, L)
        z = torch.bmm(v, q.transpose(1, 2)).view(B, -1, 1, 1)  # (B, C/2, 1, 1)
        a = torch.sigmoid(self.ln(self.wz(z).view(B, C))).view(B, C, 1, 1)
        return a * x

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q = F.adaptive_avg_pool2d(self.wq_sp(x), 1).view(B, 1, -1).softmax(dim=-1)  # (B, 1, C/2)
        v = self.wv_sp(x).view(B, -1, H * W)  # (B, C/2, L)
        a = torch.sigmoid(torch.bmm(q, v)).view(B, 1, H, W)
        return a * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "sequential":
            return self.spatial(self.channel(x))
        return self.channel(x) + self.spatial(x)


def worker(args) -> dict:
    from visattn.layers import PolarizedSelfAttention

    info = setup_worker(args.allocator, args.threads)
    out = {}
    for layout in ("parallel", "sequential"):
        for channels, size in SHAPES:
            torch.manual_seed(0)
            layer = PolarizedSelfAttention(channels, layout=layout)
            naive = NaivePSA(layer)
            x = torch.randn(args.batch_size, channels, size, size)
            with torch.no_grad():
                torch.testing.assert_close(layer(x), naive(x), atol=1e-5, rtol=1e-4)
            xg = x.clone().requires_grad_()
            grad = torch.randn_like(x)

            def fwd(m, x=x):
                def step():
                    with torch.no_grad():
                        return m(x)

                return step

            def fwd_bwd(m, xg=xg, grad=grad):
                def step():
                    xg.grad = None
                    m.zero_grad(set_to_none=True)
                    m(xg).backward(grad)

                return step

            key = f"{layout} C={channels} {size}x{size}"
            out[key] = {
                "forward": measure_interleaved({"visattn": fwd(layer), "naive": fwd(naive)}, args.rounds),
                "forward+backward": measure_interleaved(
                    {"visattn": fwd_bwd(layer), "naive": fwd_bwd(naive)}, args.rounds
                ),
            }
    return {**info, "results": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--allocator", default="tuned", choices=["tuned", "system"])
    parser.add_argument("--json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    argv = ["--worker", "--allocator", args.allocator, "--batch-size", str(args.batch_size)]
    argv += ["--rounds", str(args.rounds)] + (["--threads", str(args.threads)] if args.threads else [])
    res = run_worker(__file__, argv)
    print(
        f"allocator {res['allocator']}; {res['threads']} threads; load average at start {res['loadavg_at_start']}; OMP_WAIT_POLICY {res['omp_wait_policy']}",
        file=sys.stderr,
    )
    rows = []
    for key, r in res["results"].items():
        for what, t in r.items():
            v, n = t["visattn"], t["naive"]
            rows.append(
                [
                    f"{key}, batch {args.batch_size}",
                    what,
                    fmt(v["wall_median_ms"], 2),
                    fmt(n["wall_median_ms"], 2),
                    f"{n['wall_median_ms'] / v['wall_median_ms']:.2f}×",
                    f"{n['cpu_median_ms'] / max(v['cpu_median_ms'], 1e-9):.2f}×",
                ]
            )
    print_table(
        ["PSA layer", "pass", "visattn median ms", "naive median ms", "speed-up (wall)", "speed-up (CPU)"],
        rows,
        json_path=args.json,
        raw=res,
    )


if __name__ == "__main__":
    main()
