"""Model export: ONNX with a dynamic batch dimension and an onnxruntime parity check.

``visattn export CKPT --config RECIPE --format onnx --out model.onnx`` (or ``--model NAME``), or in Python::

    from visattn.export import export_onnx, load_trained_model

    loaded = load_trained_model("runs/demo/csra/best.safetensors")  # finds the run's config.json
    report = export_onnx(loaded.model, "csra.onnx", input_size=loaded.input_size, example=image)
    print(report.max_abs_diff)

Both ONNX exporters of ``torch.onnx.export`` are supported: ``exporter="dynamo"`` (torch.export based, the
default of torch >= 2.9, needs ``onnxscript``) and ``exporter="legacy"`` (TorchScript based, deprecated by
torch but much faster to run). ``"auto"`` (default) uses dynamo when ``onnxscript`` is installed and falls
back to the legacy exporter if that fails. Every registered model family exports with both (see
``docs/visualization.md``), including SAN's pure-PyTorch local operators with reflect padding.

The optional dependencies (``pip install 'visattn[export]'``: onnx, onnxruntime, onnxscript) are imported
only when used. :func:`load_trained_model` (a recipe or run directory + checkpoint → model, class names and
input transform) is shared with ``visattn.viz``; it needs none of them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "ExportReport",
    "TrainedModel",
    "add_subparsers",
    "export_onnx",
    "load_trained_model",
    "onnx_parity",
    "read_run_config",
]

#: Model families whose ONNX export and onnxruntime parity are tested (``tests/test_export.py``).
TESTED_FAMILIES = (
    "glyphnet",
    "csra (backbone glyphnet / resnet18)",
    "san10_pairwise / san10_patchwise (small layers and kernels)",
    "resattnet92_cifar",
    "psa_resnet18",
    "vaa (backbone resnet18)",
)


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class TrainedModel:
    """A model ready for inference plus what is needed to feed it and name its outputs.

    Attributes:
        model: the network in eval mode, on the CPU.
        class_names: one name per output.
        input_size: ``(channels, height, width)`` the model expects.
        mean, std: the normalisation its inputs get (per channel).
        transform: callable mapping a float ``(channels, H, W)`` image in [0, 1] to the model input.
        multilabel: scores are sigmoids (multi-label / attribute) rather than a softmax.
        config: the recipe (``None`` when built from a model name).
        name: the registered model name.
    """

    model: nn.Module
    class_names: list[str]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    transform: Callable[[torch.Tensor], torch.Tensor]
    multilabel: bool
    config: dict[str, Any] | None = None
    name: str = ""

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities of ``logits (B, C)``: sigmoid (multi-label) or softmax."""
        logits = logits.float()
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=1)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The displayable ``[0, 1]`` image of a model input ``x (C, H, W)``."""
        mean = torch.tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)


def read_run_config(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A recipe (YAML) or a run's ``config.json``, validated, with ``key=value`` overrides applied.

    ``config.json`` is read as JSON (YAML would take ``1e-05`` for a string) and validated by
    :func:`visattn.config.load_config`.
    """
    from visattn.config import load_config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {str(path)!r} does not exist")
    if path.suffix == ".json":
        raw = json.loads(path.read_text())
        return load_config(None, list(overrides), base=raw)
    return load_config(path, list(overrides))


def _find_run_config(checkpoint: Path) -> Path | None:
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.json").is_file():
            return folder / "config.json"
    return None


def _load_weights(model: nn.Module, checkpoint: Path, ema: bool) -> None:
    from visattn.models import read_state_dict

    state = read_state_dict(checkpoint)
    ema_state = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    if ema and not ema_state:
        raise ValueError(f"{checkpoint}: no EMA weights ('ema.*' keys) in this checkpoint")
    weights = ema_state if ema else {k: v for k, v in state.items() if not k.startswith("ema.")}
    model.load_state_dict(weights, strict=True)


def _guess_multilabel(name: str) -> bool:
    return name.startswith(("csra", "vaa"))


def load_trained_model(
    checkpoint: str | Path | None = None,
    config: str | Path | Mapping[str, Any] | None = None,
    model_name: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    img_size: int | None = None,
    class_names: Sequence[str] | None = None,
    ema: bool = False,
) -> TrainedModel:
    """Rebuild a model for inference from a checkpoint and its recipe, or from a registered name.

    Args:
        checkpoint: weights (``best.safetensors``, ``checkpoints/epoch_NNNN.safetensors``, a ``.pth``).
            Without ``config`` and ``model_name`` the run's ``config.json`` next to it (or one folder up) is
            the recipe. ``None``: the model keeps its initial weights.
        config: recipe file (YAML, or a run's ``config.json``) or an already loaded recipe dict.
        model_name: registered model name, used when there is no recipe (``model_kwargs`` are passed on).
        overrides: ``key=value`` recipe overrides.
        img_size: input side (default: the recipe's ``data.img_size`` or the model's ``input_size``).
        class_names: output names (default: ``class_names.json`` of the run, the recipe's data, or
            ``"0", "1", ...``).
        ema: load the checkpoint's ``ema.*`` weights instead of the model's.
    """
    from visattn.data import build_transform

    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint {str(checkpoint)!r} does not exist")
    if config is None and model_name is None:
        found = _find_run_config(checkpoint) if checkpoint is not None else None
        if found is None:
            raise ValueError(
                "need a recipe (--config) or a model name (--model): no config.json next to the checkpoint"
            )
        config = found
    if config is not None:
        from visattn.engine.build import build_model
        from visattn.predict import _class_names

        if isinstance(config, Mapping):
            from visattn.config import load_config

            cfg = load_config(None, list(overrides), base=dict(config))
        else:
            cfg = read_run_config(config, overrides)
        cfg["model"]["checkpoint_path"] = None
        cfg["model"]["pretrained_file"] = None  # the checkpoint holds every weight
        if class_names is None:
            anchor = checkpoint if checkpoint is not None else Path(cfg["output"]) / "best.safetensors"
            class_names = _class_names(cfg, anchor)
        model = build_model(cfg, len(class_names))
        name = cfg["model"]["name"]
        channels = int(cfg["model"]["kwargs"].get("in_chans", 3))
        size = int(img_size or cfg["data"]["img_size"])
        mean, std = tuple(cfg["data"]["mean"]), tuple(cfg["data"]["std"])
        multilabel = cfg["task"] in ("multilabel", "attribute")
    else:
        import visattn

        cfg = None
        kwargs = dict(model_kwargs or {})
        if class_names is None and checkpoint is not None:
            for folder in (checkpoint.parent, checkpoint.parent.parent):
                if (folder / "class_names.json").is_file():
                    class_names = json.loads((folder / "class_names.json").read_text())
                    break
        if class_names is not None:
            kwargs.setdefault("num_classes", len(class_names))
        model = visattn.create_model(model_name, **kwargs)
        pcfg = dict(getattr(model, "pretrained_cfg", {}) or {})
        c, h, _ = pcfg.get("input_size", (3, 224, 224))
        channels = int(kwargs.get("in_chans", c))
        size = int(img_size or h)
        mean = tuple(pcfg.get("mean", (0.0,) * channels))
        std = tuple(pcfg.get("std", (1.0,) * channels))
        if len(mean) != channels:  # e.g. an ImageNet cfg on a 1-channel model
            mean, std = (float(np.mean(mean)),) * channels, (float(np.mean(std)),) * channels
        if class_names is None:
            class_names = [str(i) for i in range(int(getattr(model, "num_classes", 0) or 0))]
        multilabel = _guess_multilabel(model_name)
        name = model_name
    if checkpoint is not None:
        _load_weights(model, checkpoint, ema)
    model = model.eval().cpu()
    mean = tuple(float(v) for v in mean) if len(mean) == channels else (float(mean[0]),) * channels
    std = tuple(float(v) for v in std) if len(std) == channels else (float(std[0]),) * channels
    transform = build_transform(False, size, mean, std)
    return TrainedModel(
        model=model,
        class_names=[str(n) for n in class_names],
        input_size=(channels, size, size),
        mean=mean,
        std=std,
        transform=transform,
        multilabel=multilabel,
        config=cfg,
        name=name,
    )


def example_input(loaded: TrainedModel, image: str | Path | None = None) -> tuple[torch.Tensor, str]:
    """A real model input ``(1, C, H, W)`` and where it came from.

    ``image``: an image file (transformed as the recipe says); otherwise the first item of the recipe's
    validation split (e.g. a glyph canvas); otherwise (no recipe) a fixed pseudo-random image.
    """
    from visattn.predict import load_image

    if image is not None:
        x = loaded.transform(load_image(image, loaded.input_size[0]))
        return x.unsqueeze(0), f"image {image}"
    if loaded.config is not None:
        from visattn.engine.build import build_datasets

        try:
            dataset = build_datasets(loaded.config, ("val",))["val"]
            return dataset[0][0].unsqueeze(0), f"validation item 0 of {loaded.config['data']['name']}"
        except (OSError, ValueError, KeyError, ImportError) as err:
            warnings.warn(
                f"cannot read the recipe's validation data ({err}); using a random input", stacklevel=2
            )
    generator = torch.Generator().manual_seed(0)
    x = loaded.transform(torch.rand(loaded.input_size, generator=generator))
    return x.unsqueeze(0), "a pseudo-random image (seed 0)"


# ---------------------------------------------------------------------------------------------- ONNX
@dataclass
class ExportReport:
    """What :func:`export_onnx` did: file, exporter, opset and the parity on the example batch."""

    path: Path
    exporter: str
    opset: int | None
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    batch_sizes: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"wrote {self.path} ({self.exporter} exporter, opset {self.opset}, dynamic batch)"
        if self.max_abs_diff is not None:
            text += (
                f"\nonnxruntime parity on batch sizes {list(self.batch_sizes)}: max |ONNX - PyTorch| = "
                f"{self.max_abs_diff:.3g}, relative {self.max_rel_diff:.3g} (divided by max(1, max |PyTorch|))"
            )
        return "\n".join([text, *self.notes])


class _LogitsOnly(nn.Module):
    """Exports ``model(x)`` as a single tensor (tuples/dicts: the first tensor / ``"logits"``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, Mapping):
            out = out["logits"] if "logits" in out else next(iter(out.values()))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out


@contextmanager
def _reference_local_ops():
    """Trace SAN's operators through their pure-PyTorch reference implementation.

    Faster registered implementations (e.g. the memory-lean CPU path, an autograd ``Function``) do not
    export with the TorchScript exporter and unroll into huge graphs with the dynamo exporter; ``impl="auto"``
    would pick them for CPU float tensors. The registry is restored afterwards.
    """
    from visattn.ops import local_attention

    registry = local_attention._IMPLEMENTATIONS
    saved = dict(registry)
    try:
        registry.clear()
        registry["reference"] = saved["reference"]
        yield
    finally:
        registry.clear()
        registry.update(saved)


def _export(model: nn.Module, x: torch.Tensor, path: Path, exporter: str, opset: int | None) -> int | None:
    with _reference_local_ops():
        return _export_traced(model, x, path, exporter, opset)


def _export_traced(
    model: nn.Module, x: torch.Tensor, path: Path, exporter: str, opset: int | None
) -> int | None:
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=4096)
        kwargs: dict[str, Any] = {"opset_version": opset} if opset else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (x,),
                None,
                dynamo=True,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                verbose=False,
                **kwargs,
            )
        program.save(str(path))
        return int(program.model.opset_imports.get("", opset or 0)) or opset
    opset = opset or 17
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=opset,
        )
    return opset


def onnx_parity(path: str | Path, model: nn.Module, inputs: torch.Tensor) -> tuple[float, float]:
    """``(max |ONNX − PyTorch|, that divided by max(1, max |PyTorch|))`` of onnxruntime on ``inputs``."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("the parity check needs onnxruntime: pip install 'visattn[export]'") from err
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        reference = _LogitsOnly(model).eval()(inputs).float().numpy()
    got = session.run(None, {session.get_inputs()[0].name: inputs.numpy().astype(np.float32)})[0]
    if got.shape != reference.shape:
        raise ValueError(f"ONNX output shape {got.shape} != PyTorch {reference.shape}")
    diff = float(np.abs(got - reference).max())
    return diff, diff / max(1.0, float(np.abs(reference).max()))


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: Sequence[int] | None = None,
    example: torch.Tensor | None = None,
    opset: int | None = None,
    exporter: str = "auto",
    check: bool = True,
) -> ExportReport:
    """Export ``model`` (eval mode, CPU, float32) to ONNX with a dynamic batch dimension.

    Args:
        model: the network; its first output tensor becomes the graph output ``logits``.
        path: the ``.onnx`` file to write.
        input_size: ``(C, H, W)`` for a random example when ``example`` is not given.
        example: a real input ``(B, C, H, W)`` (B >= 1); the parity check runs on it and, to exercise the
            dynamic batch, on it stacked with its horizontal flip.
        opset: ONNX opset (default: the exporter's; legacy: 17).
        exporter: ``"auto"``, ``"dynamo"`` (needs onnxscript) or ``"legacy"`` (TorchScript).
        check: run the onnxruntime parity check (needs onnxruntime).
    """
    if exporter not in ("auto", "dynamo", "legacy"):
        raise ValueError(f"exporter must be 'auto', 'dynamo' or 'legacy', got {exporter!r}")
    if example is None:
        if input_size is None:
            raise ValueError("export_onnx needs input_size=(C, H, W) or an example input")
        example = torch.rand(1, *input_size, generator=torch.Generator().manual_seed(0))
    if example.dim() == 3:
        example = example.unsqueeze(0)
    example = example.float().cpu()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = _LogitsOnly(model.float().cpu()).eval()
    # Trace with batch 2: a batch of 1 is easily specialised into the graph.
    trace_input = torch.cat([example[:1], example[:1].flip(-1)])
    notes: list[str] = []
    if exporter == "auto":
        order = ["dynamo", "legacy"] if importlib.util.find_spec("onnxscript") else ["legacy"]
        if order == ["legacy"]:
            notes.append("note: onnxscript is not installed, used the legacy (TorchScript) exporter")
    else:
        order = [exporter]
    used, used_opset, errors = None, None, []
    for name in order:
        try:
            used_opset = _export(wrapped, trace_input, path, name, opset)
            used = name
            break
        except Exception as err:  # an exporter failing on an operator: try the next one, report all
            if len(order) == 1:
                raise
            errors.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
            notes.append(f"note: the {name} exporter failed ({errors[-1]}); trying the next")
    if used is None:
        raise RuntimeError("ONNX export failed with every exporter:\n" + "\n".join(errors))
    report = ExportReport(path=path, exporter=used, opset=used_opset, notes=notes)
    if check:
        batches = [example, torch.cat([example, example.flip(-1)])]
        diffs = [onnx_parity(path, wrapped, b) for b in batches]
        report.max_abs_diff = max(d[0] for d in diffs)
        report.max_rel_diff = max(d[1] for d in diffs)
        report.batch_sizes = tuple(int(b.shape[0]) for b in batches)
    return report


# ---------------------------------------------------------------------------------------------- CLI
def _parse_kv(items: Sequence[str]) -> dict[str, Any]:
    from visattn.cli import _parse_sets

    return _parse_sets(items)


def _cmd_export(args: argparse.Namespace) -> int:
    if args.format != "onnx":
        raise ValueError(f"unsupported format {args.format!r} (available: onnx)")
    loaded = load_trained_model(
        args.checkpoint,
        config=args.config,
        model_name=args.model,
        model_kwargs=_parse_kv(args.model_arg),
        overrides=args.set,
        img_size=args.img_size,
        ema=args.ema,
    )
    example, source = example_input(loaded, args.image)
    out = Path(args.out or Path(args.checkpoint or loaded.name).with_suffix(".onnx").name)
    report = export_onnx(
        loaded.model, out, example=example, opset=args.opset, exporter=args.exporter, check=not args.no_check
    )
    print(report.summary())
    if report.max_abs_diff is not None:
        print(f"parity input: {source}, shape {tuple(example.shape[1:])}")
    if (
        args.tolerance is not None
        and report.max_rel_diff is not None
        and report.max_rel_diff > args.tolerance
    ):
        print(f"parity check FAILED: {report.max_rel_diff:.3g} > --tolerance {args.tolerance}")
        return 1
    return 0


def add_subparsers(subparsers: Any) -> None:
    """Add ``visattn export`` (the :mod:`visattn.cli` plugin protocol)."""
    p = subparsers.add_parser(
        "export", help="export a trained model to ONNX (dynamic batch) with an onnxruntime parity check"
    )
    p.add_argument("checkpoint", nargs="?", default=None, help="weights; omit to export initial weights")
    p.add_argument("--config", help="recipe or run config.json (default: config.json next to the checkpoint)")
    p.add_argument("--model", help="registered model name, when there is no recipe")
    p.add_argument(
        "--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model keyword (with --model)"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument("--format", default="onnx", choices=("onnx",))
    p.add_argument("--out", help="output file (default: <checkpoint stem>.onnx in the current folder)")
    p.add_argument("--img-size", type=int, default=None, help="square input side (default: the recipe's)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--exporter", default="auto", choices=("auto", "dynamo", "legacy"))
    p.add_argument("--image", help="image file for the parity check (default: a validation item)")
    p.add_argument("--ema", action="store_true", help="export the checkpoint's EMA weights")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument(
        "--tolerance", type=float, default=1e-4, help="fail (exit 1) above this relative difference"
    )
    p.set_defaults(func=_cmd_export)
