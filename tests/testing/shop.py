"""A user's saga tested the way a user of the testing kit would: the demo's order
fulfillment, its participants as effects on a model of a small shop, and two broken
compensations (a refund of the wrong amount, a release that forgets an item)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from sagalog.domain import Command
from sagalog.infrastructure.demo.sagas import ORDER_FULFILLMENT
from sagalog.testing import SagaLawsMachine
from sagalog.testing.machine import Participant

#: The demo's order saga (its participants are modelled below).
ORDER = ORDER_FULFILLMENT

#: Orders: two kinds of fruit, and an amount to charge.
ORDERS = st.fixed_dictionaries(
    {
        "order_id": st.just("o-1"),
        "items": st.fixed_dictionaries({"apple": st.integers(1, 3), "pear": st.integers(1, 3)}),
        "amount": st.integers(1, 500),
    }
)


@dataclass
class Shop:
    """The world the participants act on."""

    stock: dict[str, int] = field(default_factory=lambda: {"apple": 10, "pear": 10})
    charged: int = 0
    shipments: set[str] = field(default_factory=set)
    confirmations: int = 0


def reserve(shop: Shop, command: Command) -> Any:
    for item, quantity in command.payload["data"]["items"].items():
        shop.stock[item] -= quantity
    return {"reservation": command.payload["data"]["order_id"]}


def release(shop: Shop, command: Command) -> None:
    for item, quantity in command.payload["data"]["items"].items():
        shop.stock[item] += quantity


def release_forgetting_an_item(shop: Shop, command: Command) -> None:
    """Broken: puts back only the first item of the order."""
    item, quantity = next(iter(command.payload["data"]["items"].items()))
    shop.stock[item] += quantity


def charge(shop: Shop, command: Command) -> Any:
    shop.charged += command.payload["data"]["amount"]
    return {"charge": command.payload["data"]["amount"]}


def refund(shop: Shop, command: Command) -> None:
    """Refunds what the order was charged: read from the order, since the refund of an
    uncertain charge carries no result (the charge's reply may never have come)."""
    shop.charged -= command.payload["data"]["amount"]


def refund_at_most_100(shop: Shop, command: Command) -> None:
    """Broken: caps every refund at 100, whatever was charged."""
    shop.charged -= min(100, command.payload["data"]["amount"])


def ship(shop: Shop, command: Command) -> Any:
    shop.shipments.add(command.payload["data"]["order_id"])
    return None


def cancel_shipment(shop: Shop, command: Command) -> None:
    shop.shipments.discard(command.payload["data"]["order_id"])


def confirm(shop: Shop, command: Command) -> Any:
    shop.confirmations += 1
    return None


PARTICIPANTS: dict[str, Participant] = {
    "InventoryService.ReserveItems": reserve,
    "InventoryService.ReleaseItems": release,
    "PaymentService.ChargePayment": charge,
    "PaymentService.RefundPayment": refund,
    "ShippingService.CreateShipment": ship,
    "ShippingService.CancelShipment": cancel_shipment,
    "NotificationService.SendConfirmation": confirm,
}


class ShopLaws(SagaLawsMachine):
    """The laws and the Garcia-Molina property on the shop's order saga."""

    definition = ORDER
    data = ORDERS
    participants = PARTICIPANTS

    def new_world(self) -> Shop:
        return Shop()
