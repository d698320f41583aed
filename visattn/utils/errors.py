"""Error messages users can act on: an unknown option named with the closest valid ones."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

__all__ = ["unexpected_keyword", "unknown_option_message"]

_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def unexpected_keyword(err: TypeError) -> str | None:
    """The argument name of a ``TypeError: ... got an unexpected keyword argument 'x'`` (else ``None``)."""
    found = _UNEXPECTED.search(str(err))
    return found.group(1) if found else None


def unknown_option_message(what: str, bad: str, known: Sequence[str]) -> str:
    """``"<what> has no option 'lamda' (did you mean 'lam'?); its options: ..."``."""
    close = difflib.get_close_matches(bad, list(known), n=3, cutoff=0.6)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return f"{what} has no option {bad!r}{hint}; its options: {', '.join(known)}"
