"""Model export: ONNX with a dynamic batch dimension and an onnxruntime parity check.

``visattn export CKPT --format onnx --out model.onnx`` (the command lives in :mod:`visattn.cli.export`), or in
Python::

    from visattn.export import export_onnx
    from visattn.inference import example_input, load_trained_model

    loaded = load_trained_model("runs/demo/csra/best.safetensors")  # finds the run's config.json
    example, _ = example_input(loaded, "photo.png")  # the input exactly as `visattn eval` makes it
    report = export_onnx(loaded.model, "csra.onnx", example=example)
    print(report.max_abs_diff)

See :mod:`visattn.export.onnx` for the exporters.
"""

from .onnx import ExportReport, export_onnx, onnx_parity

__all__ = ["ExportReport", "export_onnx", "onnx_parity"]
