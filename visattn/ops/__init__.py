"""Low-level kernels: SAN's local subtraction / aggregation operators (reference + pluggable fast paths)."""

from .local_attention import (
    LocalGeometry,
    available_implementations,
    local_aggregation,
    local_subtraction,
    local_subtraction2,
    observe_calls,
    register_implementation,
)

__all__ = [
    "LocalGeometry",
    "available_implementations",
    "local_aggregation",
    "local_subtraction",
    "local_subtraction2",
    "observe_calls",
    "register_implementation",
]
