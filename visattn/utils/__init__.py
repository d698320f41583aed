"""Process-level helpers with no visattn dependencies: distributed set-up and gathers, the allocator setting."""

from .distributed import (
    DistInfo,
    all_gather_variable,
    barrier,
    init_distributed,
    is_main_process,
    seed_everything,
)

__all__ = [
    "DistInfo",
    "all_gather_variable",
    "barrier",
    "init_distributed",
    "is_main_process",
    "seed_everything",
]
