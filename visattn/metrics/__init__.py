"""Metrics with stated conventions (spec ``multilabel_metrics.md``).

:mod:`~visattn.metrics.multilabel`: average precision (non-interpolated, VOC07 11-point, all-point,
scikit-learn), CP/CR/CF1/OP/OR/OF1 at a threshold and top-k, dataset presets and the accumulating
:class:`MultiLabelMetrics`. :mod:`~visattn.metrics.attribute`: pedestrian-attribute mA and instance metrics
with :class:`AttributeMetrics`. Both accumulators gather across processes under ``torch.distributed``.
"""

from .attribute import AttributeMetrics, attribute_metrics
from .multilabel import (
    PRESETS,
    MultiLabelMetrics,
    UndefinedMetricWarning,
    average_precision,
    mean_average_precision,
    multilabel_metrics,
    precision_recall_f1,
)

__all__ = [
    "PRESETS",
    "AttributeMetrics",
    "MultiLabelMetrics",
    "UndefinedMetricWarning",
    "attribute_metrics",
    "average_precision",
    "mean_average_precision",
    "multilabel_metrics",
    "precision_recall_f1",
]
