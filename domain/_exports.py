"""Names a package no longer exports, still importable from it with a warning.

A package's ``__all__`` is its first tier of public names; a name that moved to a
documented sub-module (the second tier) keeps working from the package for code
written before, with a ``DeprecationWarning`` that names its home.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any


def moved_names(package: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` resolving ``moved`` names from their homes.

    A home is a module (``"sagalog.process.store.url"``), or a module and a new name for a
    renamed object (``"sagalog.infrastructure.rabbitmq.consumer:ReceivedMessage"``).
    """

    def resolve(name: str) -> Any:
        home = moved.get(name)
        if home is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        module, _, new_name = home.partition(":")
        warnings.warn(
            f"{package}.{name} is now {module}.{new_name or name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), new_name or name)

    return resolve
