"""One CSV writer for every table visattn writes (training log, metrics, predictions, benchmarks)."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["write_csv"]


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], missing: Any = "") -> None:
    """Rows (possibly with different columns) to one CSV; columns in first-seen order. A column a row lacks is
    written as ``missing``; ``None`` cells are written empty."""
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval=missing)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
