"""The two saga definitions the demo runs: order fulfillment and travel booking."""

from __future__ import annotations

from datetime import timedelta

from sagalog.domain import RetryPolicy, SagaDefinition, Step

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
)

TRAVEL_BOOKING = SagaDefinition(
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

DEMO_DEFINITIONS = (ORDER_FULFILLMENT, TRAVEL_BOOKING)
