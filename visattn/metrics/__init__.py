"""Metrics with stated conventions."""

from .multilabel import average_precision, mean_average_precision

__all__ = ["average_precision", "mean_average_precision"]
