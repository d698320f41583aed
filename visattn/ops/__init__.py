"""Low-level kernels: SAN's local subtraction / aggregation operators (reference + pluggable fast paths)."""

# Memory-lean CPU path (priority over the reference for CPU float tensors).
from .fast_cpu import register as _register_fast_cpu  # noqa: E402
from .local_attention import (
    LocalGeometry,
    available_implementations,
    local_aggregation,
    local_subtraction,
    local_subtraction2,
    observe_calls,
    register_implementation,
    use_implementation,
)

_register_fast_cpu()

# Triton kernels (GPU; CPU only under Triton's interpreter). Registered only if triton is installed;
# registering just looks it up, the kernel module is imported on first use.
try:
    from .triton_gpu import register as _register_triton
except ImportError:  # pragma: no cover - triton_gpu itself imports only torch
    pass
else:
    _register_triton()

__all__ = [
    "LocalGeometry",
    "available_implementations",
    "local_aggregation",
    "local_subtraction",
    "local_subtraction2",
    "observe_calls",
    "register_implementation",
    "use_implementation",
]
