"""A package's names resolved on first use: lazily imported ones, ones that moved, old modules.

A package's ``__all__`` is its first tier of public names. Some it imports only when
first read (their module needs an optional extra, or is heavy to load); a name that
left the first tier for a documented module (the second tier) keeps working from the
package for code written before, with a ``DeprecationWarning`` that names its home.
Homes are written as eventsourcing topics: ``"package.module"`` (the same name there) or
``"package.module:NewName"`` (a renamed object).
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any


def names_on_demand(
    namespace: MutableMapping[str, Any],
    *,
    lazy: Mapping[str, str] | None = None,
    moved: Mapping[str, str] | None = None,
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the package whose globals are ``namespace``.

    ``lazy`` names are imported from their home on first read and kept in ``namespace``;
    ``moved`` names are resolved from their home each time, with a warning.
    """
    package = str(namespace["__name__"])
    lazy = lazy or {}
    moved = moved or {}

    def resolve(name: str) -> Any:
        if name in lazy:
            value = _from(lazy[name], name)
            namespace[name] = value
            return value
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
        return _from(home, name)

    return resolve


#: The optional extra that installs each third-party package a lazy name may need.
EXTRAS = {
    "pika": "rabbitmq",
    "prometheus_client": "metrics",
    "psycopg": "postgres",
    "matplotlib": "plot",
    "hypothesis": "testing",
}


def _from(home: str, name: str) -> Any:
    """The object at ``home`` (a topic), under ``name`` unless the topic renames it.

    A module that needs a missing optional extra raises ``ImportError`` naming the extra.
    """
    module, _, new_name = home.partition(":")
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing not in EXTRAS:
            raise
        msg = f"{name} needs {missing}: pip install 'sagalog[{EXTRAS[missing]}]'"
        raise ImportError(msg, name=missing) from error
    return getattr(found, new_name or name)


class ModuleAliases(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Old module paths that moved, importable with a ``DeprecationWarning``.

    ``import sagalog.infrastructure.relay`` finds the module now at
    ``sagalog.infrastructure.messaging.relay``: the same module object, so its classes
    keep one identity. Installed at the end of ``sys.meta_path``, it is asked only about
    names no file answers to.
    """

    def __init__(self, moved: Mapping[str, str]) -> None:
        self.moved = dict(moved)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.moved:
            return None
        return ModuleSpec(fullname, self)

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        new = self.moved[spec.name]
        warnings.warn(
            f"module {spec.name} is now {new}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was imported under its own name."""


def alias_modules(moved: Mapping[str, str]) -> None:
    """Make the ``moved`` old module paths importable (once per process)."""
    if not any(isinstance(f, ModuleAliases) and f.moved == moved for f in sys.meta_path):
        sys.meta_path.append(ModuleAliases(moved))
