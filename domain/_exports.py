"""A package's names resolved on first use: lazily imported ones, and ones that moved.

A package's ``__all__`` is its first tier of public names. Some it imports only when
first read (their module needs an optional extra, or is heavy to load); a name that
left the first tier for a documented module (the second tier) keeps working from the
package for code written before, with a ``DeprecationWarning`` that names its home.
Homes are eventsourcing topics: ``"package.module"`` (the same name there) or
``"package.module:NewName"`` (a renamed object).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from eventsourcing.utils import resolve_topic


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


def _from(home: str, name: str) -> Any:
    """The object at ``home`` (a topic), under ``name`` unless the topic renames it."""
    return resolve_topic(home if ":" in home else f"{home}:{name}")
