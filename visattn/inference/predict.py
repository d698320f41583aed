"""Prediction on image files with a trained model, for every task (``visattn predict``).

Inputs go through the run loader's pipeline (:meth:`~visattn.inference.run.TrainedModel.input_of`), so a
file is seen exactly as at evaluation. What comes out depends on the recipe's task:

* ``multilabel`` / ``attribute``: per-class sigmoid scores, the labels at or above ``threshold``, top-k;
* ``classification``: softmax scores, the top-1 label, top-k;
* ``segmentation``: a per-pixel class map at the image's own size, written as an indexed PNG
  (``<stem>_classes.png``: pixel value = class index, VOC palette) and summarised in the result as the
  fraction of pixels per class; the task's own inference (``whole``/``slide``, flip) is used;
* ``keypoints``: one pose per image (the whole image is the person box), in COCO results format
  (``keypoints`` = ``[x1, y1, s1, ...]`` in image pixels, ``score``), with an overlay PNG
  (``<stem>_keypoints.png``) when ``out_dir`` is given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from visattn.utils.tables import write_csv

from .run import TrainedModel

__all__ = ["IMAGE_SUFFIXES", "expand_images", "predict", "write_predictions"]

#: File suffixes taken from a folder given to :func:`expand_images` (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def expand_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files of ``items``: files as given, folders (recursively: files with an image suffix, sorted)
    and glob patterns (``photos/*.jpg``, ``**`` allowed); one that names nothing is an error naming it."""
    import glob

    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"folder {str(path)!r} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        elif any(c in str(item) for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(item), recursive=True) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"pattern {str(item)!r} matches no file")
        elif path.is_file():
            found = [path]
        else:
            raise FileNotFoundError(f"image {str(path)!r} does not exist")
        out.extend(p for p in found if p not in out)
    return out


def _classify(loaded: TrainedModel, path: Path, topk: int, threshold: float) -> dict[str, Any]:
    names = loaded.class_names
    logits = loaded.model(loaded.input_of(path).unsqueeze(0))
    scores = loaded.scores(logits)[0]
    order = torch.argsort(scores, descending=True)[: max(1, topk)]
    if loaded.multilabel:
        labels = [names[i] for i in range(len(names)) if scores[i] >= threshold]
    else:
        labels = [names[int(order[0])]]
    return {
        "image": str(path),
        "labels": labels,
        "scores": {n: float(s) for n, s in zip(names, scores, strict=True)},
        "top": [(names[int(i)], float(scores[i])) for i in order],
    }


def _task(loaded: TrainedModel) -> Any:
    from visattn.engine.build import build_task

    if loaded.config is None:
        raise ValueError(f"predicting {loaded.task} needs the recipe the model was trained with")
    return build_task(loaded.config, loaded.model, None)


def _segment(loaded: TrainedModel, task: Any, path: Path, out_dir: Path | None) -> dict[str, Any]:
    from PIL import Image

    from visattn.data.voc_segmentation import voc_colormap
    from visattn.engine.tasks.segmentation import segmentation_input

    image = loaded.read(path)
    height, width = image.shape[-2:]
    # The evaluation input (loaded.image_input's) and where it is the image, not padding: crop that back.
    x, valid = segmentation_input(loaded.config)(image)
    rows, cols = torch.nonzero(valid, as_tuple=True)
    logits = task.predict(loaded.model, x.unsqueeze(0), size=x.shape[-2:])
    if rows.numel():
        logits = logits[..., : int(rows.max()) + 1, : int(cols.max()) + 1]
    logits = F.interpolate(logits.float(), size=(height, width), mode="bilinear", align_corners=False)
    classes = logits.argmax(1)[0].to(torch.uint8).numpy()
    counts = np.bincount(classes.reshape(-1), minlength=len(loaded.class_names))
    result: dict[str, Any] = {
        "image": str(path),
        "size": [int(height), int(width)],
        "class_fractions": {
            loaded.class_names[i] if i < len(loaded.class_names) else str(i): round(
                float(c) / classes.size, 6
            )
            for i, c in enumerate(counts)
            if c
        },
    }
    if out_dir is not None:
        png = Image.fromarray(classes, mode="P")
        png.putpalette(voc_colormap().reshape(-1).tolist())
        target = out_dir / f"{path.stem}_classes.png"
        png.save(target)
        result["class_map"] = str(target)
    return result


def _pose(loaded: TrainedModel, task: Any, path: Path, index: int, out_dir: Path | None) -> dict[str, Any]:
    from visattn.data.heatmaps import decode_heatmaps
    from visattn.engine.tasks.keypoints import keypoint_transform, to_image_coords, whole_image_sample

    image = loaded.read(path)
    x, _, _, meta = keypoint_transform(loaded.config, False)(whole_image_sample(image))
    try:
        heat = task.predict(loaded.model, x.unsqueeze(0))
    except (ValueError, OSError) as err:  # no left/right pairs to flip with: predict without the flip test
        if not task.flip_test:
            raise
        task.flip_test = False
        heat = task.predict(loaded.model, x.unsqueeze(0))
        import logging

        logging.getLogger(__name__).warning("flip test skipped (%s)", err)
    coords, maxvals = decode_heatmaps(heat.cpu(), task.decode, task.blur_kernel)
    points = to_image_coords(
        coords, meta["center"][None], meta["size"][None], task.input_size, task.heatmap_size
    )[0]
    scores = maxvals[0].reshape(-1)
    flat = torch.cat([points, scores[:, None]], dim=1).reshape(-1)
    result: dict[str, Any] = {
        "image_id": index,
        "file_name": str(path),
        "category_id": 1,
        "keypoints": [round(float(v), 3) for v in flat],
        "score": float(scores.mean()),
    }
    if out_dir is not None:
        target = out_dir / f"{path.stem}_keypoints.png"
        _draw_keypoints(image, points, scores, loaded.class_names, target)
        result["overlay"] = str(target)
    return result


def _draw_keypoints(
    image: torch.Tensor, points: torch.Tensor, scores: torch.Tensor, names: Sequence[str], path: Path
) -> None:
    from PIL import Image, ImageDraw

    array = image.permute(1, 2, 0).numpy()
    canvas = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB")
    scale = max(1, round(max(canvas.size) / 256))
    if scale > 1 or max(canvas.size) < 256:  # small images: enlarge so that markers and names are legible
        factor = max(scale, 256 // max(canvas.size))
        canvas = canvas.resize((canvas.width * factor, canvas.height * factor), Image.NEAREST)
        points = points * factor
    draw = ImageDraw.Draw(canvas)
    radius = max(2, max(canvas.size) // 100)
    for k, ((x, y), s) in enumerate(zip(points.tolist(), scores.tolist(), strict=True)):
        colour = (255, 64, 64) if s >= 0.2 else (128, 128, 128)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=colour, width=2)
        label = names[k] if k < len(names) else str(k)
        draw.text((x + radius + 1, y - radius), f"{label} {s:.2f}", fill=colour)
    canvas.save(path)


@torch.no_grad()
def predict(
    loaded: TrainedModel,
    images: Sequence[str | Path],
    topk: int = 5,
    threshold: float = 0.5,
    out_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """One result dict per image file (see the module docstring for its keys per task).

    ``out_dir``: where the segmentation class maps and keypoint overlays are written (``None``: not written;
    classification results are only returned).
    """
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    loaded.model.eval()
    results = []
    if loaded.task == "segmentation":
        task = _task(loaded)
        results = [_segment(loaded, task, Path(p), out) for p in images]
    elif loaded.task == "keypoints":
        task = _task(loaded)
        results = [_pose(loaded, task, Path(p), i, out) for i, p in enumerate(images)]
    else:
        results = [_classify(loaded, Path(p), topk, threshold) for p in images]
    return results


def write_predictions(results: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """The results as JSON (a COCO results list for keypoint predictions), or ``.csv``: one row per image
    with its labels and one score column per class (segmentation: one class-fraction column per class)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() != ".csv":
        path.write_text(json.dumps(list(results), indent=2))
        return path
    rows = []
    for r in results:
        if "scores" in r:
            rows.append({"image": r["image"], "labels": ";".join(r["labels"]), **r["scores"]})
        elif "class_fractions" in r:
            rows.append({"image": r["image"], "class_map": r.get("class_map", ""), **r["class_fractions"]})
        else:
            raise ValueError(f"{path}: keypoint results are written as JSON (COCO results format), not CSV")
    write_csv(path, rows, missing=0.0)  # a class absent from one image's map: fraction 0
    return path
