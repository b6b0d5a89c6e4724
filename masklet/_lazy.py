"""Lazy package exports: names are imported from their submodule on first access (PEP 562), so importing a
package stays cheap (no torch, no OpenCV) until something is used."""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, list[str]]) -> tuple[list[str], Callable[[str], Any],
                                                                       Callable[[], list[str]]]:
    """`exports` maps submodule -> names it defines. Returns the package's `__all__`, `__getattr__` and
    `__dir__`; a resolved name is cached in the package's namespace."""
    where = {name: module for module, names in exports.items() for name in names}
    names = list(where)

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(f"{package}.{where[name]}"), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return names, __getattr__, __dir__
