"""The saga definitions the demo runs: order fulfillment and travel booking (two versions each).

``OrderFulfillment`` has two registered versions, as after a deploy: version 1
charged the card once and gave shipping 30 seconds; version 2 retries the
charge once after 5 seconds and gives shipping a minute. New orders start on
version 2; the demo starts some on version 1 (sagas that began before the
deploy), which keep running on the definition they started with — see
``sagalog versions``.

``TravelBooking`` version 2 checks the budget, then books hotel, flight and car in
parallel (``parallel(...)``): when one branch fails, the siblings that booked are
cancelled. Version 1 booked them one after the other; it stays registered so a
database from before still loads.
"""

from __future__ import annotations

from datetime import timedelta

from sagalog.domain import RetryPolicy, SagaDefinition, Step, parallel

ORDER_FULFILLMENT = SagaDefinition(
    "OrderFulfillment",
    [
        Step(
            name="reserve_inventory",
            action="InventoryService.ReserveItems",
            compensation="InventoryService.ReleaseItems",
            timeout=timedelta(seconds=30),
        ),
        Step(
            name="process_payment",
            action="PaymentService.ChargePayment",
            compensation="PaymentService.RefundPayment",
            timeout=timedelta(seconds=30),
            retry=RetryPolicy(max_attempts=2, initial_delay=timedelta(seconds=5)),
        ),
        Step(
            name="create_shipment",
            action="ShippingService.CreateShipment",
            compensation="ShippingService.CancelShipment",
            timeout=timedelta(seconds=60),
        ),
        Step(
            name="send_confirmation",
            action="NotificationService.SendConfirmation",
            timeout=timedelta(seconds=30),
            retriable=True,
        ),
    ],
    version=2,
)

#: Version 1, before the deploy: the same steps, the charge tried once, shipping given 30 s.
ORDER_FULFILLMENT_V1 = SagaDefinition(
    "OrderFulfillment",
    [
        ORDER_FULFILLMENT.steps[0],
        ORDER_FULFILLMENT.steps[1].model_copy(update={"retry": RetryPolicy()}),
        ORDER_FULFILLMENT.steps[2].model_copy(update={"timeout": timedelta(seconds=30)}),
        ORDER_FULFILLMENT.steps[3],
    ],
    version=1,
)

#: Version 1: hotel, flight and car one after the other (``sagalog versions`` lists it).
TRAVEL_BOOKING_V1 = SagaDefinition(
    "TravelBooking",
    [
        Step(
            name="book_hotel",
            action="HotelService.BookRoom",
            compensation="HotelService.CancelRoom",
            timeout=timedelta(seconds=45),
        ),
        Step(
            name="book_flight",
            action="FlightService.BookSeat",
            compensation="FlightService.CancelSeat",
            timeout=timedelta(seconds=45),
            retry=RetryPolicy(max_attempts=3, initial_delay=timedelta(seconds=2)),
        ),
        Step(
            name="rent_car",
            action="CarService.RentCar",
            compensation="CarService.ReturnCar",
            timeout=timedelta(seconds=45),
        ),
    ],
)

#: Version 2: a budget check, then hotel, flight and car at once, joined at the end.
TRAVEL_BOOKING = SagaDefinition(
    "TravelBooking",
    [
        Step(
            name="check_budget",
            action="BudgetService.CheckBudget",
            timeout=timedelta(seconds=15),
        ),
        parallel(*TRAVEL_BOOKING_V1.steps),
    ],
    version=2,
)

DEMO_DEFINITIONS = (ORDER_FULFILLMENT_V1, ORDER_FULFILLMENT, TRAVEL_BOOKING_V1, TRAVEL_BOOKING)
