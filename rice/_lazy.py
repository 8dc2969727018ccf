"""PEP 562 lazy attributes: a package names what it exports and which module defines each, and loads it on first
use, so that importing the package (or printing CLI help) does not pay for torch, timm or FAISS."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, table: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package``: ``table`` maps a public name to the module that defines it; a
    loaded name is stored in ``namespace`` (the package's globals) so later look-ups skip this function."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name]), name)
        namespace[name] = value
        return value

    return __getattr__
