"""ONNX export with a dynamic batch dimension and the onnxruntime parity check.

Both ONNX exporters of ``torch.onnx.export`` are supported: ``exporter="dynamo"`` (torch.export based, the
default of torch >= 2.9, needs ``onnxscript``) and ``exporter="legacy"`` (TorchScript based, deprecated by
torch but much faster to run). ``"auto"`` (default) uses dynamo when ``onnxscript`` is installed and falls
back to the legacy exporter if that fails. Every registered model family exports with both (see
``docs/visualization.md``), including SAN's pure-PyTorch local operators with reflect padding.

The caller's model is never changed: a float32 CPU copy in eval mode is exported. onnx, onnxruntime and
onnxscript are imported only when used (``pip install 'visattn[export]'``).
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from visattn.ops import use_implementation


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


def _export(model: nn.Module, x: torch.Tensor, path: Path, exporter: str, opset: int | None) -> int | None:
    # SAN's fast operators (autograd Functions, chunk loops) do not export with the TorchScript exporter
    # and unroll into huge graphs with dynamo: trace the pure-PyTorch reference, without touching the registry.
    with use_implementation("reference"):
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
    was_training = model.training
    try:
        with torch.no_grad():
            reference = _LogitsOnly(model.eval())(inputs).float().numpy()
    finally:
        model.train(was_training)
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
    """Export a float32 CPU eval-mode copy of ``model`` to ONNX with a dynamic batch dimension.

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
    # A float32 CPU copy in eval mode: the caller's model keeps its device, dtype, mode and weights.
    wrapped = _LogitsOnly(copy.deepcopy(model).float().cpu()).eval()
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
