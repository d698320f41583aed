"""CSRA head cost vs the ResNet-101 forward pass at 448 px (target: head ≤ 1 % of the forward).

    python benchmarks/csra_head.py [--batch-size 2] [--img-size 448] [--rounds 5] [--threads N]
        [--allocator tuned|system] [--json OUT]

Inference (no gradients, float32) of ``csra_resnet101`` in two settings: VOC2007 (20 classes, 1 head,
λ = 0.1; the registered default) and COCO-like (80 classes, 8 heads). The backbone
(``forward_features``: ResNet-101 to the 2048×14×14 map) and the CSRA head (``forward_head`` on that map)
are timed interleaved on the same input; MACs from ``visattn.models.count_macs`` (convention
``"macs"``) for the whole network and for the head alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _bench_common import fmt, measure_interleaved, print_table, run_worker, setup_worker  # noqa: E402

SETTINGS = {
    "VOC (C=20, H=1)": dict(num_classes=20, num_heads=1),
    "COCO (C=80, H=8)": dict(num_classes=80, num_heads=8),
}


def worker(args) -> dict:
    import visattn
    from visattn.models import count_macs

    info = setup_worker(args.allocator, args.threads)
    out = {}
    for label, kwargs in SETTINGS.items():
        torch.manual_seed(0)
        model = visattn.create_model("csra_resnet101", **kwargs).eval()
        x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
        with torch.no_grad():
            feats = model.forward_features(x)
            total_macs = count_macs(model, (3, args.img_size, args.img_size))
            head_macs = count_macs(model.get_classifier(), tuple(feats.shape[1:]))

            def backbone(model=model, x=x):
                return model.forward_features(x)

            def head(model=model, feats=feats):
                return model.forward_head(feats)

            timing = measure_interleaved({"backbone": backbone, "head": head}, rounds=args.rounds)
        out[label] = {
            "timing": timing,
            "total_macs": total_macs,
            "head_macs": head_macs,
            "map": list(feats.shape),
        }
    return {**info, "results": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--img-size", type=int, default=448)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--allocator", default="tuned", choices=["tuned", "system"])
    parser.add_argument("--json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    argv = ["--worker", "--allocator", args.allocator, "--batch-size", str(args.batch_size)]
    argv += ["--img-size", str(args.img_size), "--rounds", str(args.rounds)]
    argv += ["--threads", str(args.threads)] if args.threads else []
    res = run_worker(__file__, argv)
    print(
        f"allocator {res['allocator']}; {res['threads']} threads; load average at start {res['loadavg_at_start']}; OMP_WAIT_POLICY {res['omp_wait_policy']}",
        file=sys.stderr,
    )
    rows = []
    for label, r in res["results"].items():
        t = r["timing"]
        bb, hd = t["backbone"]["wall_median_ms"], t["head"]["wall_median_ms"]
        bb_cpu, hd_cpu = t["backbone"]["cpu_median_ms"], t["head"]["cpu_median_ms"]
        rows.append(
            [
                f"csra_resnet101 {label}, batch {args.batch_size}, {args.img_size} px",
                fmt(bb, 0),
                fmt(hd, 2),
                f"{100 * hd / (bb + hd):.3f} %",
                f"{100 * hd_cpu / (bb_cpu + hd_cpu):.3f} %",
                f"{r['total_macs'] / 1e9:.2f}",
                f"{r['head_macs'] / 1e6:.2f}",
                f"{100 * r['head_macs'] / r['total_macs']:.3f} %",
            ]
        )
    print_table(
        [
            "setting",
            "backbone median ms",
            "head median ms",
            "head share (wall)",
            "head share (CPU)",
            "GMACs total",
            "head MMACs",
            "head share (MACs)",
        ],
        rows,
        json_path=args.json,
        raw=res,
    )


if __name__ == "__main__":
    main()
