"""Import the user's code named as ``module:attribute``: one loader for every option that takes one.

The CLI and the worker name user code this way: ``--app`` (a ``SagaManager`` subclass),
``--definitions`` (saga definitions), ``--against`` (a definition for what-if) and
``--participants`` (a function subscribing in-process participants). The working
directory is importable, as with ``python -m``, so a module beside the user needs no
install. Every failure is one :class:`ImportSpecError` line.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from sagalog.domain import SagaDefinition, SagalogError
from sagalog.process.manager import SagaManager

__all__ = ["ImportSpecError", "definitions_from", "import_object", "manager_class"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


class ImportSpecError(SagalogError, ValueError):
    """``module:attribute`` could not be imported, or is not the kind of object wanted."""


def import_object(spec: str, *, what: str = "attribute") -> Any:
    """The object named by ``module:attribute`` (the attribute may be dotted).

    ``what`` names the attribute in error messages (``"definition"``, ``"function"``).
    """
    module_name, colon, attribute = spec.strip().partition(":")
    if not colon or not module_name or not attribute:
        raise ImportSpecError(f"give the {what} as module:attribute, not {spec!r}")
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:
        sys.path.insert(0, cwd)  # the user's module, as `python -m` would find it
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportSpecError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:  # user code failing at import time
        raise ImportSpecError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ImportSpecError(f"{module_name!r} has no attribute {attribute!r}")
        found = getattr(found, part)
    return found


def definitions_from(spec: str) -> list[SagaDefinition]:
    """The saga definitions named by ``spec``: one definition, or an iterable of them.

    An iterable may be any collection (a list, a tuple, a ``DefinitionRegistry``'s
    values); a ``SagaManager`` subclass lends its ``definitions``.
    """
    found: object = import_object(spec, what="definitions")
    if isinstance(found, SagaDefinition):
        return [found]
    if isinstance(found, type) and isinstance(getattr(found, "definitions", None), Iterable):
        found = getattr(found, "definitions")  # noqa: B009 - any class with definitions
    if isinstance(found, dict):
        found = found.values()
    if isinstance(found, Iterable) and not isinstance(found, str | bytes):
        items: list[object] = list(found)
        if items and all(isinstance(item, SagaDefinition) for item in items):
            return [item for item in items if isinstance(item, SagaDefinition)]
    raise ImportSpecError(
        f"{spec} is a {type(found).__name__}, not a SagaDefinition or a list of them"
    )


def manager_class(spec: str) -> type[SagaManager]:
    """The ``SagaManager`` class named by ``spec``: ``module:Class``, or a bare application name.

    A bare name (``TransferSagas``) gives a plain ``SagaManager`` whose ``name`` is it,
    enough to read, operate and fire the timers of that manager's sagas (every saga
    stores its definition); ``module:Class`` brings the class's definitions too.
    """
    text = spec.strip()
    if ":" not in text:
        if not _NAME.fullmatch(text):
            raise ImportSpecError(
                f"give the app as module:ManagerClass or as an application name, not {spec!r}"
            )
        return type(text, (SagaManager,), {"name": text, "__module__": __name__})
    found = import_object(text, what="app")
    if not (isinstance(found, type) and issubclass(found, SagaManager)):
        raise ImportSpecError(f"{text} is a {type(found).__name__}, not a SagaManager subclass")
    return found
