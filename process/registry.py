"""The definitions a manager knows, by name and version.

Several versions of one definition stay registered: new sagas start on the
newest, and sagas in flight keep the version they started with (the whole
definition is stored in their ``SagaStarted`` event, pinned by fingerprint).
Registering a *different* definition under a name and version already taken is
refused, because two sagas claiming the same version must have run the same steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from sagalog.domain import InvalidDefinitionError, SagaDefinition, UnknownSagaTypeError


class DefinitionRegistry:
    """Saga definitions by ``(name, version)``; the newest version starts new sagas."""

    def __init__(self, definitions: Iterable[SagaDefinition] = ()) -> None:
        self._by_key: dict[tuple[str, int], SagaDefinition] = {}
        for definition in definitions:
            self.register(definition)

    def register(self, definition: SagaDefinition) -> None:
        """Add ``definition``; re-registering an identical one is a no-op."""
        if not isinstance(definition, SagaDefinition):
            raise InvalidDefinitionError(
                f"expected a SagaDefinition, got {type(definition).__name__}"
            )
        key = (definition.name, definition.version)
        existing = self._by_key.get(key)
        if existing is not None and existing.fingerprint != definition.fingerprint:
            raise InvalidDefinitionError(
                f"a different definition is already registered as {definition.name!r} "
                f"version {definition.version} (fingerprint {existing.fingerprint[:12]}, "
                f"new one {definition.fingerprint[:12]}); give the changed definition a new version"
            )
        self._by_key[key] = definition

    def get(self, name: str, version: int | None = None) -> SagaDefinition:
        """The definition ``name`` at ``version``, or its newest version when ``None``."""
        if version is not None:
            try:
                return self._by_key[(name, version)]
            except KeyError:
                raise UnknownSagaTypeError(
                    f"no definition {name!r} version {version} is registered; "
                    f"known: {self._describe()}"
                ) from None
        versions = [v for (n, v) in self._by_key if n == name]
        if not versions:
            raise UnknownSagaTypeError(
                f"no definition named {name!r} is registered; known: {self._describe()}"
            )
        return self._by_key[(name, max(versions))]

    def names(self) -> list[str]:
        """Registered definition names, sorted."""
        return sorted({name for name, _ in self._by_key})

    def __iter__(self) -> Iterator[SagaDefinition]:
        return iter(sorted(self._by_key.values(), key=lambda d: (d.name, d.version)))

    def __len__(self) -> int:
        return len(self._by_key)

    def _describe(self) -> str:
        if not self._by_key:
            return "none"
        return ", ".join(f"{n} v{v}" for n, v in sorted(self._by_key))
