"""Saga definitions: an ordered list of steps, each with its compensation beside it.

Definitions are pydantic models, validated when they are built, immutable, and
serialisable to canonical JSON. The SHA-256 of that canonical JSON is the
definition's *fingerprint*: stored sagas record it next to the name and version,
so one can always tell exactly which definition a saga ran.

The pivot rule (Garcia-Molina & Salem; Garcia-Molina et al., "Modeling Long-Running
Activities as Nested Sagas"): a saga is a run of compensatable steps, then a pivot,
then retriable steps that are retried until they succeed and are never compensated.
So a retriable step may only stand after the last step that has a compensation.

Steps may run in parallel: ``Step(after=(...))`` names the steps a step waits for
(``None``, the default, means the previous step in the list; ``()`` the start of the
saga). The list stays a topological order. For a graph the pivot rule reads: every
step that is not retriable (so every compensatable one) is an ancestor of every
retriable step, so once a retriable step may start nothing that could roll the saga
back is still running or waiting. :func:`parallel` writes the fan-out/join shape.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from sagalog.domain.errors import InvalidDefinitionError

_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
_COMMAND_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.:\-/]*$"

#: Longest delay a retry policy may ask for between two attempts.
MAX_RETRY_DELAY = timedelta(days=7)


def _invalid(exc: ValidationError, what: str) -> InvalidDefinitionError:
    """One :class:`InvalidDefinitionError` naming every field and rule that failed."""
    problems = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return InvalidDefinitionError(f"invalid {what}: " + "; ".join(problems))


class _DefinitionPart(BaseModel):
    """Base of the definition models: immutable, strict, and refusing with a typed error.

    pydantic reports a broken rule as its own ``ValidationError``; callers of sagalog
    catch :class:`InvalidDefinitionError` (a ``ValueError``) for every bad definition,
    so construction translates one into the other, keeping pydantic's as the cause.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _invalid(exc, type(self).__name__) from exc


class RetryPolicy(_DefinitionPart):
    """How often, and how far apart, an action or a compensation is attempted.

    ``max_attempts`` counts every attempt including the first, so the default of
    1 means "no retry". The delay before attempt ``n + 1`` is
    ``min(max_delay, initial_delay * backoff_factor ** (n - 1))``, shortened by up
    to ``jitter`` (a fraction) so that many sagas failing at once do not retry in
    lock-step. The jitter is derived from the command id, not drawn at random, so
    that replaying a saga makes the same decisions.
    """

    max_attempts: int = Field(default=1, ge=1, le=1000)
    initial_delay: timedelta = Field(default=timedelta(seconds=1))
    backoff_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    max_delay: timedelta = Field(default=timedelta(minutes=5))
    jitter: float = Field(default=0.0, ge=0.0, le=1.0)

    @field_validator("initial_delay")
    @classmethod
    def _initial_delay_not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("initial_delay must not be negative")
        return value

    @field_validator("max_delay")
    @classmethod
    def _max_delay_bounded(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("max_delay must be positive")
        if value > MAX_RETRY_DELAY:
            raise ValueError(f"max_delay must be at most {MAX_RETRY_DELAY}")
        return value

    @model_validator(mode="after")
    def _initial_within_cap(self) -> Self:
        if self.initial_delay > self.max_delay:
            raise ValueError("initial_delay must not exceed max_delay")
        return self

    def delay_after(self, attempt: int, jitter_key: str) -> timedelta:
        """The wait before the attempt that follows failed attempt number ``attempt``."""
        base = self.initial_delay.total_seconds() * self.backoff_factor ** (attempt - 1)
        seconds = min(self.max_delay.total_seconds(), base)
        if self.jitter:
            digest = hashlib.sha256(jitter_key.encode("utf-8")).digest()
            fraction = int.from_bytes(digest[:8], "big") / 2**64
            seconds *= 1.0 - self.jitter * fraction
        return timedelta(seconds=seconds)


#: The default retry policy of a compensation: compensations must eventually
#: succeed, so they get a few attempts with backoff before an operator is asked.
DEFAULT_COMPENSATION_RETRY = RetryPolicy(
    max_attempts=5,
    initial_delay=timedelta(seconds=1),
    backoff_factor=2.0,
    max_delay=timedelta(minutes=1),
    jitter=0.1,
)

#: The default retry policy of a retriable step (one after the pivot).
DEFAULT_RETRIABLE_RETRY = RetryPolicy(
    max_attempts=10,
    initial_delay=timedelta(seconds=1),
    backoff_factor=2.0,
    max_delay=timedelta(minutes=5),
    jitter=0.1,
)


class Step(_DefinitionPart):
    """One step of a saga: the command that does it and the command that undoes it.

    ``action`` and ``compensation`` are command names chosen by the user, such as
    ``"InventoryService.ReserveItems"``; sagalog only routes them. A step without a
    compensation has nothing to undo. A ``retriable`` step has no compensation
    and stands after the pivot: when it fails it is retried by its ``retry``
    policy and never compensated; when that policy is exhausted the saga waits
    for an operator. ``timeout`` bounds each attempt of the action;
    ``compensation_timeout`` (by default the same) each attempt of the compensation.
    """

    name: str = Field(min_length=1, max_length=100, pattern=_NAME_PATTERN)
    action: str = Field(min_length=1, max_length=200, pattern=_COMMAND_PATTERN)
    compensation: str | None = Field(
        default=None, min_length=1, max_length=200, pattern=_COMMAND_PATTERN
    )
    timeout: timedelta | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    compensation_retry: RetryPolicy = Field(default=DEFAULT_COMPENSATION_RETRY)
    compensation_timeout: timedelta | None = None
    retriable: bool = False
    #: Whether the compensation also runs when the action's outcome is unknown (its
    #: last attempt timed out, or it was in flight when the saga began to roll back).
    #: The default, ``True``, assumes an unknown outcome may be a done one; ``False``
    #: is for an action its participant refuses once its deadline has passed (fenced).
    compensate_uncertain: bool = True
    #: The steps this one waits for: ``None`` (the default) the previous step in the
    #: list, ``()`` none (it starts with the saga), else the names, each earlier in the list.
    after: tuple[str, ...] | None = None

    @model_validator(mode="before")
    @classmethod
    def _retriable_defaults(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("retriable") and "retry" not in values:
            return {**values, "retry": DEFAULT_RETRIABLE_RETRY}
        return values

    @field_validator("timeout", "compensation_timeout")
    @classmethod
    def _positive_timeout(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("timeouts must be positive")
        return value

    @model_validator(mode="after")
    def _retriable_has_no_compensation(self) -> Self:
        if self.retriable and self.compensation is not None:
            raise ValueError(
                f"step {self.name!r} is retriable, so it is never compensated: "
                "remove its compensation or make it not retriable"
            )
        return self

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The dump leaves out settings added later while they hold their default.

        A definition's fingerprint is the hash of its dump, so a definition written
        before ``compensate_uncertain`` existed keeps its fingerprint (and stored sagas
        keep matching it) unless it sets the new field.
        """
        dumped: dict[str, Any] = handler(self)
        if dumped.get("compensate_uncertain") is True:
            del dumped["compensate_uncertain"]
        if dumped.get("after", ()) is None:
            del dumped["after"]
        return dumped

    @property
    def compensatable(self) -> bool:
        """Whether this step has a compensation to run when the saga rolls back."""
        return self.compensation is not None

    @property
    def effective_compensation_timeout(self) -> timedelta | None:
        """The bound on one compensation attempt: its own, else the step's timeout."""
        return self.compensation_timeout if self.compensation_timeout else self.timeout


class SagaDefinition(_DefinitionPart):
    """A named, versioned, ordered list of steps, with an optional deadline for the whole saga.

    Validated when built: at least one step; unique step names; retriable steps
    only after the last compensatable step (the pivot rule). ``deadline`` is an SLA
    counted from the saga's start: a saga still running before its pivot when it
    passes records ``SagaDeadlinePassed`` and compensates, as after a failure.
    """

    name: str = Field(min_length=1, max_length=100, pattern=_NAME_PATTERN)
    steps: tuple[Step, ...] = Field(min_length=1, max_length=100)
    version: int = Field(default=1, ge=1)
    deadline: timedelta | None = None

    def __init__(self, name: str, steps: Any, version: int = 1, **kwargs: Any) -> None:
        """Allow the positional form ``SagaDefinition(name, steps, version)``."""
        super().__init__(name=name, steps=steps, version=version, **kwargs)

    @field_validator("steps", mode="before")
    @classmethod
    def _expand_groups(cls, steps: Any) -> Any:
        """Expand :func:`parallel` groups into steps with explicit ``after``."""
        if isinstance(steps, list | tuple) and any(isinstance(s, ParallelSteps) for s in steps):
            return _expand(steps)
        return steps

    @field_validator("steps")
    @classmethod
    def _unique_names(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        seen: set[str] = set()
        for step in steps:
            if step.name in seen:
                raise ValueError(f"step names must be unique; {step.name!r} appears twice")
            seen.add(step.name)
        return steps

    @field_validator("deadline")
    @classmethod
    def _positive_deadline(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value <= timedelta(0):
            raise ValueError("the saga deadline must be positive")
        return value

    @model_serializer(mode="wrap")
    def _omit_no_deadline(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The dump leaves ``deadline`` out when there is none, so definitions written
        before it existed keep their fingerprint (see ``Step._omit_new_defaults``)."""
        dumped: dict[str, Any] = handler(self)
        if dumped.get("deadline", 0) is None:
            del dumped["deadline"]
        return dumped

    @model_validator(mode="after")
    def _dependencies_known(self) -> Self:
        """Each ``after`` names other, distinct steps that stand earlier in the list."""
        position = {step.name: i for i, step in enumerate(self.steps)}
        for index, step in enumerate(self.steps):
            if step.after is None:
                continue
            seen: set[str] = set()
            for name in step.after:
                where = f"step {step.name!r} waits for {name!r}"
                if name == step.name:
                    raise ValueError(f"{where}: a step cannot wait for itself")
                if name in seen:
                    raise ValueError(f"{where} twice: name each dependency once")
                seen.add(name)
                if name not in position:
                    raise ValueError(f"{where}, which is not a step of this saga")
                if position[name] > index:
                    raise ValueError(
                        f"{where}, which stands later in the list; list a step after the "
                        "steps it waits for (the list is a topological order)"
                    )
        return self

    @model_validator(mode="after")
    def _pivot_rule(self) -> Self:
        last_compensatable = max(
            (i for i, s in enumerate(self.steps) if s.compensatable), default=-1
        )
        for index, step in enumerate(self.steps[: last_compensatable + 1]):
            if step.retriable:
                raise ValueError(
                    f"retriable step {step.name!r} (position {index + 1}) stands before "
                    f"compensatable step {self.steps[last_compensatable].name!r}; retriable "
                    "steps must come after the last compensatable step (the pivot rule)"
                )
        first_retriable = next((i for i, s in enumerate(self.steps) if s.retriable), None)
        if first_retriable is not None:
            for index, step in enumerate(self.steps[first_retriable:], start=first_retriable):
                if not step.retriable:
                    raise ValueError(
                        f"step {step.name!r} (position {index + 1}) follows retriable step "
                        f"{self.steps[first_retriable].name!r} but is not retriable; past the "
                        "pivot a saga only goes forward, so every later step must be "
                        "retriable (the pivot rule)"
                    )
        retriable = [s.name for s in self.steps if s.retriable]
        for step in self.steps:
            if step.retriable:
                continue
            for name in retriable:
                if step.name not in self.ancestors(name):
                    kind = "compensatable" if step.compensatable else "not retriable"
                    raise ValueError(
                        f"step {step.name!r} is {kind} but retriable step {name!r} does not "
                        "wait for it; every step that is not retriable must be an ancestor "
                        "of every retriable step, so that nothing that could roll the saga "
                        "back still runs once it is past its pivot (the pivot rule)"
                    )
        return self

    # -- lookups -----------------------------------------------------------------

    @cached_property
    def _index(self) -> dict[str, int]:
        return {step.name: i for i, step in enumerate(self.steps)}

    def has_step(self, name: str) -> bool:
        """Whether a step of this name is part of the definition."""
        return name in self._index

    def step(self, name: str) -> Step:
        """The step called ``name``; ``KeyError`` if there is none."""
        return self.steps[self._index[name]]

    def index_of(self, name: str) -> int:
        """Zero-based position of step ``name``."""
        return self._index[name]

    @cached_property
    def dependencies(self) -> dict[str, tuple[str, ...]]:
        """The steps each step waits for, ``after=None`` resolved to the previous step."""
        deps: dict[str, tuple[str, ...]] = {}
        for index, step in enumerate(self.steps):
            if step.after is not None:
                deps[step.name] = step.after
            else:
                deps[step.name] = (self.steps[index - 1].name,) if index else ()
        return deps

    @cached_property
    def dependents(self) -> dict[str, tuple[str, ...]]:
        """The steps that wait for each step (directly), in list order."""
        found: dict[str, list[str]] = {step.name: [] for step in self.steps}
        for name, deps in self.dependencies.items():
            for dep in deps:
                found[dep].append(name)
        return {name: tuple(names) for name, names in found.items()}

    @cached_property
    def _ancestors(self) -> dict[str, frozenset[str]]:
        result: dict[str, frozenset[str]] = {}
        for step in self.steps:
            deps = self.dependencies[step.name]
            result[step.name] = frozenset(deps).union(*(result[d] for d in deps))
        return result

    @cached_property
    def _descendants(self) -> dict[str, frozenset[str]]:
        result: dict[str, frozenset[str]] = {}
        for step in reversed(self.steps):
            below = self.dependents[step.name]
            result[step.name] = frozenset(below).union(*(result[d] for d in below))
        return result

    def ancestors(self, name: str) -> frozenset[str]:
        """Every step ``name`` waits for, directly or through others."""
        return self._ancestors[name]

    def descendants(self, name: str) -> frozenset[str]:
        """Every step that waits for ``name``, directly or through others."""
        return self._descendants[name]

    @cached_property
    def is_linear(self) -> bool:
        """Whether each step waits for exactly the previous one: a plain list of steps."""
        return all(
            self.dependencies[step.name] == ((self.steps[i - 1].name,) if i else ())
            for i, step in enumerate(self.steps)
        )

    @property
    def step_names(self) -> tuple[str, ...]:
        """The names of the steps, in order."""
        return tuple(step.name for step in self.steps)

    # -- identity ----------------------------------------------------------------

    def canonical_json(self) -> str:
        """The definition as JSON with sorted keys and no spaces: the input of the fingerprint."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of :meth:`canonical_json`; equal definitions have equal fingerprints."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()

    @classmethod
    def from_json(cls, text: str | bytes) -> SagaDefinition:
        """Rebuild a definition from its JSON (``canonical_json`` or ``model_dump_json``).

        Raises :class:`InvalidDefinitionError` if the JSON is malformed or breaks a rule.
        """
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            raise _invalid(exc, cls.__name__) from exc


@dataclass(frozen=True)
class ParallelSteps:
    """Steps that run side by side: one item of a definition's list (see :func:`parallel`)."""

    steps: tuple[Step, ...]


def parallel(*steps: Step) -> ParallelSteps:
    """Steps that start together and are joined by the next item of the list.

    ``SagaDefinition("Trip", [budget, parallel(hotel, flight, car), confirm])`` means
    hotel, flight and car each wait for ``budget`` (or start with the saga when the
    group comes first) and ``confirm`` waits for all three. It only writes ``after``:
    the definition stores the expanded steps, and a step of the group that sets its
    own ``after`` keeps it.
    """
    if not steps or not all(isinstance(step, Step) for step in steps):
        raise InvalidDefinitionError("parallel() takes one or more Step objects")
    return ParallelSteps(tuple(steps))


def _expand(items: Iterable[Any]) -> list[Any]:
    """The steps of ``items`` with each group's fan-out and join written as ``after``.

    A plain step after a plain step keeps ``after=None`` (the previous step), so a
    list without groups expands to itself.
    """
    expanded: list[Any] = []
    previous: tuple[str, ...] = ()
    after_group = False
    for item in items:
        group = isinstance(item, ParallelSteps)
        members = item.steps if group else (item,)
        names: list[str] = []
        for member in members:
            if isinstance(member, Step) and member.after is None and (group or after_group):
                member = member.model_copy(update={"after": previous})
            expanded.append(member)
            names.append(member.name if isinstance(member, Step) else "")
        previous, after_group = tuple(names), group
    return expanded
