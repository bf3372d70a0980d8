"""Hypothesis strategies for saga tests, all in this one module.

``from sagalog.testing.strategies import definitions, saga_data, reply_schedules``
(or the same names from ``sagalog.testing``). sagalog's own property tests draw
from here, and so can yours: arbitrary definitions to test code that handles any
saga, and reply schedules to drive your own definition through every order of
events its participants could produce.

Definitions
    :func:`definitions` draws valid :class:`~sagalog.domain.SagaDefinition` objects of
    1-8 steps: any mix of compensatable steps, steps without a compensation and
    retriable steps, the retriable ones only after the last compensatable step (the
    pivot rule), with or without timeouts, and retry policies of 1-4 attempts whose
    delays are small and may be zero. The building blocks are public too:
    :func:`step_kinds`, :func:`steps`, :func:`retry_policies`, :func:`timeouts`,
    :func:`delays`, :func:`step_names`, :func:`command_names`.

Payloads
    :func:`json_values`, :func:`saga_data`, :func:`step_results` and
    :func:`error_texts` draw what participants and callers pass in.

Time
    :data:`EPOCH` (from :mod:`sagalog.testing.clock`) is the fixed, timezone-aware
    instant tests start their clock at; :func:`aware_datetimes` draws other instants.

Reply schedules
    A reply schedule (:func:`reply_schedules`) is a list of abstract *moves* that a test
    interprets against the saga's state at the moment the move is made, because what
    a participant can answer depends on what the saga has sent so far:

    - :class:`AnswerCommand` — a participant answers one of the commands sent so far: the
      latest one (normally the pending one) or an earlier one (a reordered or stale
      reply), successfully or not, naming its attempt or not, with a fresh message id
      or none;
    - :class:`Redeliver` — the transport delivers a reply it already delivered again,
      with the same message id (at-least-once delivery: a duplicate);
    - :class:`StrayReply` — a reply naming a step, kind and attempt chosen blindly,
      which may be an unknown step, the wrong kind, a never-dispatched step or an
      attempt never sent (typed errors, nothing recorded);
    - :class:`AdvanceClock` — time passes (possibly exactly to the saga's next
      wakeup), so due timeouts and retries fire;
    - :class:`OperatorAction` — an operator retries, resolves or aborts.

    :func:`pick_back` resolves a move's ``pick`` against a list of things sent or
    delivered so far. Interpreters decide how to realise a move for their subject
    (the ``Saga`` aggregate directly, or a ``SagaManager`` end to end); a move that
    does not apply to the current state (say, a redelivery before anything was
    delivered) is simply skipped.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from hypothesis import strategies as st

from sagalog.domain import CommandKind, RetryPolicy, SagaDefinition, Step
from sagalog.testing.clock import EPOCH
from sagalog.testing.laws import Sent

if TYPE_CHECKING:
    from sagalog.domain import Command
    from sagalog.testing.world import Answer

__all__ = [
    "EPOCH",
    "UNKNOWN_STEP",
    "AdvanceClock",
    "AnswerCommand",
    "DeliveredReply",
    "JSONValue",
    "Move",
    "OperatorAction",
    "OperatorVerb",
    "Redeliver",
    "StepKind",
    "StrayReply",
    "aware_datetimes",
    "clock_advances",
    "command_names",
    "dag_definitions",
    "definitions",
    "delays",
    "error_texts",
    "json_keys",
    "json_values",
    "moves",
    "operator_actions",
    "operator_names",
    "pick_back",
    "picks",
    "redeliveries",
    "replies",
    "reply_schedules",
    "retry_policies",
    "saga_data",
    "saga_names",
    "step_kinds",
    "step_results",
    "steps",
    "stray_replies",
    "timeouts",
]

T = TypeVar("T")

#: A JSON value as Python holds it after ``json.loads``.
JSONValue: TypeAlias = bool | int | float | str | list[Any] | dict[str, Any] | None

# -- names ---------------------------------------------------------------------


def step_names() -> st.SearchStrategy[str]:
    """Valid step names: short snake_case identifiers such as ``reserve_inventory``."""
    return st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)


def command_names() -> st.SearchStrategy[str]:
    """Valid command names in the ``Service.Verb`` form, e.g. ``Payment.Refund``."""
    return st.from_regex(r"[A-Z][a-z]{0,8}\.[A-Z][A-Za-z]{0,12}", fullmatch=True)


def saga_names() -> st.SearchStrategy[str]:
    """Valid saga (definition) names such as ``OrderFulfillment``."""
    return st.from_regex(r"[A-Z][A-Za-z0-9_]{0,20}", fullmatch=True)


# -- time and retry policies ---------------------------------------------------


def delays(max_seconds: int = 30) -> st.SearchStrategy[timedelta]:
    """Small non-negative delays, zero included (and shrinking towards zero)."""
    return st.one_of(
        st.just(timedelta(0)),
        st.integers(1, max_seconds * 1000).map(lambda ms: timedelta(milliseconds=ms)),
    )


def timeouts(max_seconds: int = 60) -> st.SearchStrategy[timedelta | None]:
    """No timeout, or a positive one of at most ``max_seconds`` whole seconds."""
    return st.one_of(st.none(), st.integers(1, max_seconds).map(lambda s: timedelta(seconds=s)))


@st.composite
def retry_policies(
    draw: st.DrawFn,
    max_attempts: st.SearchStrategy[int] | None = None,
) -> RetryPolicy:
    """Valid retry policies: 1-4 attempts (unless ``max_attempts`` says otherwise),
    initial delays from :func:`delays` (zero included), backoff 1-4, a cap at least the
    initial delay, and jitter anywhere in 0..1."""
    attempts = draw(max_attempts if max_attempts is not None else st.integers(1, 4))
    initial = draw(delays())
    floor_ms = max(1, initial // timedelta(milliseconds=1))
    cap_ms = draw(st.integers(floor_ms, max(floor_ms, 120_000)))
    backoff = draw(st.one_of(st.just(1.0), st.floats(1.0, 4.0)))
    jitter = draw(st.one_of(st.just(0.0), st.sampled_from([0.1, 0.5, 1.0]), st.floats(0.0, 1.0)))
    return RetryPolicy(
        max_attempts=attempts,
        initial_delay=initial,
        backoff_factor=backoff,
        max_delay=timedelta(milliseconds=cap_ms),
        jitter=jitter,
    )


# -- steps and definitions -----------------------------------------------------


class StepKind(StrEnum):
    """The three sorts of step the pivot rule distinguishes."""

    COMPENSATABLE = "compensatable"
    """Has a compensation; may stand anywhere before the retriable steps."""
    PLAIN = "plain"
    """Has no compensation and is not retriable (nothing to undo; e.g. the pivot)."""
    RETRIABLE = "retriable"
    """Retried and never compensated; only after the last compensatable step."""


@st.composite
def step_kinds(draw: st.DrawFn, min_steps: int = 1, max_steps: int = 8) -> list[StepKind]:
    """The kinds of a definition's steps, in order, obeying the pivot rule.

    Every valid arrangement is reachable: a head of compensatable and plain steps
    (ending wherever the last compensatable step stands), then plain steps, then
    retriable steps only (past the pivot a saga only goes forward).
    """
    count = draw(st.integers(min_steps, max_steps))
    split = draw(st.integers(0, count))
    head = draw(
        st.lists(
            st.sampled_from([StepKind.COMPENSATABLE, StepKind.PLAIN]),
            min_size=split,
            max_size=split,
        )
    )
    plain = draw(st.integers(0, count - split))
    return head + [StepKind.PLAIN] * plain + [StepKind.RETRIABLE] * (count - split - plain)


@st.composite
def steps(draw: st.DrawFn, kind: StepKind | None = None, name: str | None = None) -> Step:
    """One valid step of the given kind (drawn if not given).

    Action retry policies come from :func:`retry_policies` (so even non-retriable steps
    may retry their action before giving up); compensatable steps get their own
    compensation retry policy and, sometimes, a compensation timeout of their own.
    """
    kind = kind if kind is not None else draw(st.sampled_from(list(StepKind)))
    name = name if name is not None else draw(step_names())
    fields: dict[str, Any] = {
        "name": name,
        "action": draw(command_names()),
        "timeout": draw(timeouts()),
        "retry": draw(retry_policies()),
    }
    if kind is StepKind.COMPENSATABLE:
        fields["compensation"] = draw(command_names())
        fields["compensation_retry"] = draw(retry_policies())
        fields["compensation_timeout"] = draw(timeouts())
    elif kind is StepKind.RETRIABLE:
        fields["retriable"] = True
    return Step(**fields)


@st.composite
def definitions(
    draw: st.DrawFn,
    min_steps: int = 1,
    max_steps: int = 8,
    kinds: st.SearchStrategy[list[StepKind]] | None = None,
) -> SagaDefinition:
    """Valid saga definitions of ``min_steps``..``max_steps`` steps (1-8 by default).

    Pass ``kinds`` (e.g. ``st.just([StepKind.COMPENSATABLE] * 3)``) to fix the shape.
    """
    shape = draw(kinds if kinds is not None else step_kinds(min_steps, max_steps))
    names = draw(st.lists(step_names(), min_size=len(shape), max_size=len(shape), unique=True))
    return SagaDefinition(
        draw(saga_names()),
        [draw(steps(kind, name)) for kind, name in zip(shape, names, strict=True)],
        draw(st.integers(1, 3)),
    )


@st.composite
def dag_definitions(draw: st.DrawFn, min_steps: int = 1, max_steps: int = 8) -> SagaDefinition:
    """Valid definitions whose steps wait for random earlier steps (``after``).

    Kinds follow :func:`step_kinds`; a step that is not retriable waits for any of
    the earlier ones (none: it starts with the saga); the first retriable step waits
    for every step no other waits for, and each later one for some earlier retriable
    step besides, so that every step that is not retriable is an ancestor of every
    retriable one (the pivot rule). ``after=None`` is drawn where it means the same.
    """
    shape = draw(step_kinds(min_steps, max_steps))
    names = draw(st.lists(step_names(), min_size=len(shape), max_size=len(shape), unique=True))
    built: list[Step] = []
    deps: dict[str, list[str]] = {}
    for index, (kind, name) in enumerate(zip(shape, names, strict=True)):
        earlier = names[:index]
        if kind is StepKind.RETRIABLE and StepKind.RETRIABLE not in shape[:index]:
            chosen = [n for n in earlier if not any(n in deps[m] for m in earlier)]
        else:
            pool = (
                earlier
                if kind is StepKind.RETRIABLE
                else [
                    n for n, k in zip(earlier, shape, strict=False) if k is not StepKind.RETRIABLE
                ]
            )
            chosen = draw(st.lists(st.sampled_from(pool), unique=True, max_size=3)) if pool else []
            if kind is StepKind.RETRIABLE:
                retriable = [n for n, k in zip(earlier, shape, strict=False) if k is kind]
                chosen = [*chosen, draw(st.sampled_from(retriable))]
            chosen = [n for n in earlier if n in chosen]
        deps[name] = chosen
        previous = (earlier[-1],) if earlier else ()
        after: tuple[str, ...] | None = tuple(chosen)
        if after == previous and draw(st.booleans()):
            after = None
        built.append(draw(steps(kind, name)).model_copy(update={"after": after}))
    return SagaDefinition(draw(saga_names()), built, draw(st.integers(1, 3)))


# -- payloads ------------------------------------------------------------------

_KEY_ALPHABET = string.ascii_letters + string.digits + "_-. "

#: Characters every store can hold: no lone surrogates and no NUL, which sagalog
#: refuses at the door (PostgreSQL cannot store a NUL in text or JSON).
_STORABLE = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def json_keys() -> st.SearchStrategy[str]:
    """Object keys: short strings."""
    return st.text(_KEY_ALPHABET, min_size=1, max_size=10)


def json_values(*, python_forms: bool = False, max_leaves: int = 10) -> st.SearchStrategy[Any]:
    """Plain JSON values: null, booleans, integers, finite floats, text, lists, objects.

    With ``python_forms=True`` also the Python spellings that ``json.dumps`` accepts
    but that do not survive a JSON round trip unchanged: tuples, and objects with
    integer keys. Use it to check that what a saga stores equals what a rebuild
    from its (JSON-encoded) events gives.
    """
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(_STORABLE, max_size=20),
    )

    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        options = [
            st.lists(children, max_size=4),
            st.dictionaries(json_keys(), children, max_size=4),
        ]
        if python_forms:
            options.append(st.lists(children, max_size=3).map(tuple))
            options.append(st.dictionaries(st.integers(0, 9), children, max_size=3))
        return st.one_of(options)

    return st.recursive(scalars, extend, max_leaves=max_leaves)


def saga_data(*, python_forms: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    """A saga's data: a small JSON object with string keys."""
    return st.dictionaries(json_keys(), json_values(python_forms=python_forms), max_size=5)


def step_results(*, python_forms: bool = False) -> st.SearchStrategy[Any]:
    """What a participant returns when a step succeeds: any JSON value, often null."""
    return st.one_of(st.none(), json_values(python_forms=python_forms))


def error_texts() -> st.SearchStrategy[str]:
    """Non-blank error texts, as participants report them."""
    return st.one_of(
        st.sampled_from(["card declined", "out of stock", "service unavailable"]),
        st.text(_STORABLE, min_size=1, max_size=40).filter(lambda text: bool(text.strip())),
    )


def operator_names() -> st.SearchStrategy[str]:
    """Who acted: an operator's login."""
    return st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8})?", fullmatch=True)


def aware_datetimes() -> st.SearchStrategy[datetime]:
    """Timezone-aware instants (UTC) within a few decades of :data:`EPOCH`."""
    return st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2060, 1, 1), timezones=st.just(UTC)
    )


# -- reply schedules -----------------------------------------------------------

#: A step name no definition can have (step names are identifiers), for stray replies.
UNKNOWN_STEP = "Unknown-Step"


@dataclass(frozen=True)
class DeliveredReply:
    """One concrete reply as handed to a saga or a manager (kept to redeliver it
    verbatim): about the ``kind`` command of ``step``, succeeded or not. (Not a
    :class:`sagalog.process.Reply` message: the fields a test hands over, no more.)"""

    step: str
    kind: CommandKind
    succeeded: bool
    attempt: int | None
    message_id: str | None
    result: Any = None
    error: str = "failed"

    @classmethod
    def answering(cls, command: Command, answer: Answer, message_id: str) -> DeliveredReply:
        """The reply a participant gives after handling ``command`` as ``answer`` says."""
        return cls(
            command.step,
            command.kind,
            answer.succeeded,
            command.attempt,
            message_id,
            answer.result if command.kind is CommandKind.ACTION else None,
            answer.error or "failed",
        )


@dataclass(frozen=True)
class AnswerCommand:
    """A participant answers one of the commands the saga has sent so far.

    ``pick`` counts back from the latest command sent: ``0`` is the latest (normally
    the one pending now), ``1`` the one before, and so on (see :func:`pick_back`), so
    higher picks are reordered or stale replies. ``succeeded`` chooses between
    completed and failed; ``result`` is the result of a successful action and
    ``error`` the text of a failure. ``cite_attempt`` says whether the reply names
    the attempt it answers (a stale attempt is then recognisable as such). With
    ``with_message_id`` the reply carries a message id never used before.
    """

    pick: int
    succeeded: bool
    result: Any
    error: str
    cite_attempt: bool
    with_message_id: bool

    def delivery(
        self, sent: Sequence[Sent], fresh_message_id: Callable[[], str]
    ) -> DeliveredReply | None:
        """This reply, aimed at the command ``pick`` places back in ``sent`` (the commands
        sent so far, oldest first); ``None`` when nothing was sent."""
        target = pick_back(sent, self.pick)
        if target is None:
            return None
        return DeliveredReply(
            step=target.step,
            kind=target.kind,
            succeeded=self.succeeded,
            attempt=target.attempt if self.cite_attempt else None,
            message_id=fresh_message_id() if self.with_message_id else None,
            result=self.result,
            error=self.error,
        )


@dataclass(frozen=True)
class Redeliver:
    """The transport delivers again a reply it already delivered, with the same message id.

    ``pick`` counts back from the latest delivery that carried a message id.
    """

    pick: int


@dataclass(frozen=True)
class StrayReply:
    """A reply naming a step, a kind and an attempt chosen without looking at the saga.

    ``step_index`` indexes the definition's steps (wrapped modulo their number);
    ``None`` names a step the definition does not have. ``attempt`` may be ``None``
    (no attempt named), ``0`` or more than was ever sent.
    """

    step_index: int | None
    kind: CommandKind
    attempt: int | None
    succeeded: bool

    def delivery(self, step_names: Sequence[str], message_id: str) -> DeliveredReply:
        """This reply made concrete for a definition with steps ``step_names``."""
        step = (
            UNKNOWN_STEP
            if self.step_index is None
            else step_names[self.step_index % len(step_names)]
        )
        return DeliveredReply(
            step, self.kind, self.succeeded, self.attempt, message_id, error="stray"
        )


@dataclass(frozen=True)
class AdvanceClock:
    """Time passes, then due timeouts and retries fire.

    With ``to_next_wakeup`` the clock moves exactly to the saga's next wakeup when it
    has one (the boundary case); otherwise it moves ``seconds`` forward (zero allowed).
    """

    seconds: float
    to_next_wakeup: bool

    def moment(self, now: datetime, due: Sequence[datetime]) -> datetime:
        """Where the clock reading ``now`` moves, the saga's timers being ``due``."""
        if self.to_next_wakeup and due:
            return max(now, min(due))
        return now + timedelta(seconds=self.seconds)


class OperatorVerb(StrEnum):
    """What an operator can do to a saga."""

    RETRY = "retry"
    RESOLVE = "resolve"
    ABORT = "abort"


@dataclass(frozen=True)
class OperatorAction:
    """An operator retries a dead-lettered command, resolves it by hand, or aborts."""

    verb: OperatorVerb
    actor: str
    reason: str


#: One move of a reply schedule.
Move: TypeAlias = AnswerCommand | Redeliver | StrayReply | AdvanceClock | OperatorAction

#: The former names of :class:`AnswerCommand` and :class:`DeliveredReply`, documented
#: before they were renamed (they read as :class:`sagalog.process.Reply`); kept so that
#: code importing them keeps working, and left out of ``__all__``.
Reply = AnswerCommand
Delivery = DeliveredReply


def picks() -> st.SearchStrategy[int]:
    """How far back a move reaches: mostly ``0`` (the latest), sometimes further."""
    return st.one_of(st.just(0), st.integers(0, 6))


def replies(
    *, python_forms: bool = False, succeeded: st.SearchStrategy[bool] | None = None
) -> st.SearchStrategy[AnswerCommand]:
    """:class:`AnswerCommand` moves: successes and failures, to the latest or an earlier command."""
    return st.builds(
        AnswerCommand,
        pick=picks(),
        succeeded=succeeded if succeeded is not None else st.booleans(),
        result=step_results(python_forms=python_forms),
        error=error_texts(),
        cite_attempt=st.booleans(),
        with_message_id=st.booleans(),
    )


def redeliveries() -> st.SearchStrategy[Redeliver]:
    """:class:`Redeliver` moves: duplicates by message id."""
    return st.builds(Redeliver, pick=picks())


def stray_replies() -> st.SearchStrategy[StrayReply]:
    """:class:`StrayReply` moves: unknown steps, wrong kinds, attempts never sent."""
    return st.builds(
        StrayReply,
        step_index=st.one_of(st.none(), st.integers(0, 7)),
        kind=st.sampled_from(list(CommandKind)),
        attempt=st.one_of(st.none(), st.integers(0, 6)),
        succeeded=st.booleans(),
    )


def clock_advances() -> st.SearchStrategy[AdvanceClock]:
    """:class:`AdvanceClock` moves: to the next wakeup, or 0-120 seconds on."""
    return st.builds(
        AdvanceClock,
        seconds=st.one_of(st.just(0.0), st.floats(0.0, 120.0)),
        to_next_wakeup=st.booleans(),
    )


def operator_actions() -> st.SearchStrategy[OperatorAction]:
    """:class:`OperatorAction` moves: retry, resolve or abort, with who and why."""
    return st.builds(
        OperatorAction,
        verb=st.sampled_from(list(OperatorVerb)),
        actor=operator_names(),
        reason=st.sampled_from(["fixed by hand", "customer asked", "retrying after fix"]),
    )


def moves(*, python_forms: bool = False) -> st.SearchStrategy[Move]:
    """Any one move, replies being the most frequent."""
    reply = replies(python_forms=python_forms)
    return st.one_of(
        reply,
        reply,
        reply,
        redeliveries(),
        stray_replies(),
        clock_advances(),
        clock_advances(),
        operator_actions(),
    )


def reply_schedules(
    min_size: int = 0, max_size: int = 40, *, python_forms: bool = False
) -> st.SearchStrategy[list[Move]]:
    """A list of moves to interpret in order against one saga (see the module docs)."""
    return st.lists(moves(python_forms=python_forms), min_size=min_size, max_size=max_size)


def pick_back(items: Sequence[T], pick: int) -> T | None:
    """The item ``pick`` places back from the end of ``items`` (wrapping), or ``None``."""
    if not items:
        return None
    return items[-1 - (pick % len(items))]
