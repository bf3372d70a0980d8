"""``SagaLawsMachine`` on a user's saga: correct compensations pass, broken ones are
caught, and the failure names the broken compensation and shows the history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test
from shop import (
    ORDER,
    PARTICIPANTS,
    Shop,
    ShopLaws,
    charge,
    refund_at_most_100,
    release_forgetting_an_item,
)

from sagalog.domain import Command, SagaDefinition, SagaStatus, Step
from sagalog.testing import Fencing, LawViolation, SagaLawsMachine

#: Enough examples to find a broken compensation every time, and the same ones on
#: every run (derandomized, no example database), so the tests cannot be flaky;
#: found failures are shrunk (the message is checked on the minimal example) but
#: not explained (hypothesis' explain phase would take seconds per test).
HUNT = settings(
    max_examples=100,
    phases=[Phase.generate, Phase.shrink],
    stateful_step_count=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TestShopLaws = ShopLaws.TestCase


class RefundOfTheWrongAmount(ShopLaws):
    participants = {**PARTICIPANTS, "PaymentService.RefundPayment": refund_at_most_100}


class ReleaseThatForgetsAnItem(ShopLaws):
    participants = {**PARTICIPANTS, "InventoryService.ReleaseItems": release_forgetting_an_item}


def test_a_refund_of_the_wrong_amount_is_caught_and_named() -> None:
    with pytest.raises(LawViolation) as caught:
        run_state_machine_as_test(RefundOfTheWrongAmount, settings=HUNT)
    message = str(caught.value)
    assert message.startswith(
        "Garcia-Molina: compensation 'PaymentService.RefundPayment' of step 'process_payment' "
        "did not undo 'PaymentService.ChargePayment'"
    ), message
    assert "(OrderFulfillment v2)," in message  # which saga, then its history
    assert "StepCompleted step='process_payment' attempt=" in message
    assert "CompensationDispatched step='process_payment'" in message


def test_a_release_that_forgets_an_item_is_caught_and_named() -> None:
    with pytest.raises(LawViolation) as caught:
        run_state_machine_as_test(ReleaseThatForgetsAnItem, settings=HUNT)
    message = str(caught.value)
    assert "compensation 'InventoryService.ReleaseItems' of step 'reserve_inventory'" in message
    assert "'pear'" in message  # the world shown says which stock is off


def test_a_compensation_without_a_participant_is_caught_undoing_nothing() -> None:
    class RefundForgotten(SagaLawsMachine):
        definition = ORDER
        data = ShopLaws.data
        participants = {"PaymentService.ChargePayment": charge}

        def new_world(self) -> Shop:
            return Shop()

    with pytest.raises(LawViolation, match=r"compensation 'PaymentService\.RefundPayment'"):
        run_state_machine_as_test(RefundForgotten, settings=HUNT)


def test_a_participant_that_is_not_deterministic_is_reported_as_such() -> None:
    charges = iter(range(1, 1_000_000))

    def charge_something_else_each_time(shop: Shop, command: Command) -> object:
        amount = next(charges)
        shop.charged += amount
        return {"charge": amount}

    class ChargesDrift(ShopLaws):
        participants = {
            **PARTICIPANTS,
            "PaymentService.ChargePayment": charge_something_else_each_time,
        }

    with pytest.raises(LawViolation, match=r"are the participants deterministic"):
        run_state_machine_as_test(ChargesDrift, settings=HUNT)


def test_a_machine_without_a_definition_says_what_to_set() -> None:
    class NoDefinition(SagaLawsMachine):
        pass

    with pytest.raises(TypeError, match=r"must set definition"):
        run_state_machine_as_test(NoDefinition, settings=HUNT)


def test_participants_without_a_world_say_what_to_override() -> None:
    class NoWorld(SagaLawsMachine):
        definition = ORDER
        participants = PARTICIPANTS

    with pytest.raises(TypeError, match=r"override new_world"):
        run_state_machine_as_test(NoWorld, settings=HUNT)


def test_the_machine_reaches_every_ending_of_the_shop_saga() -> None:
    """The rules are rich enough to end sagas both ways (and dead-letter them)."""
    seen: set[SagaStatus] = set()

    class Watched(ShopLaws):
        def teardown(self) -> None:
            if self._definition is not None:
                seen.add(self.saga.status)
            super().teardown()

    run_state_machine_as_test(Watched, settings=settings(HUNT, max_examples=100))
    assert {SagaStatus.COMPLETED, SagaStatus.FAILED} <= seen


def test_a_step_that_opts_out_of_uncertain_compensation_is_caught_leaving_its_action() -> None:
    """Law 1 against the world: a charge that ran but whose reply came after its timeout is
    left in force when its step does not compensate uncertain outcomes."""
    charge_first = SagaDefinition(
        name="Charge",
        steps=[
            Step(
                name="process_payment",
                action="PaymentService.ChargePayment",
                compensation="PaymentService.RefundPayment",
                timeout=timedelta(seconds=30),
                compensate_uncertain=False,
            ),
            Step(name="create_shipment", action="ShippingService.CreateShipment"),
        ],
    )

    class ChargeNotCompensatedWhenUncertain(ShopLaws):
        definition = charge_first

    with pytest.raises(LawViolation) as caught:
        run_state_machine_as_test(
            ChargeNotCompensatedWhenUncertain, settings=settings(HUNT, max_examples=500)
        )
    message = str(caught.value)
    assert message.startswith(
        "law 1: the saga is FAILED but the action of 'process_payment' is in force"
    ), message
    assert "'PaymentService.ChargePayment' (step 'process_payment', attempt 1) ran" in message


def test_the_shop_laws_hold_with_fenced_participants() -> None:
    """Fenced participants refuse expired actions, actions after their compensation and
    repeated attempts; the shop's saga keeps every law with them too."""

    class FencedShopLaws(ShopLaws):
        fencing = Fencing()

    run_state_machine_as_test(FencedShopLaws, settings=HUNT)
