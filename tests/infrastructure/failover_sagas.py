"""The trip the failover test's workers run: the demo's travel booking, with short timeouts.

The in-process transport queues commands in the worker's memory, so a worker killed
between recording the relay's position and delivering them loses those deliveries; the
step's timeout then recovers the saga (it compensates). Short timeouts let the test see
every saga end within its patience.
"""

from __future__ import annotations

from datetime import timedelta

from sagalog.domain import RetryPolicy, SagaDefinition, Step

TIMEOUT = timedelta(seconds=3)

TRIP = SagaDefinition(
    "FailoverTrip",
    [
        Step(
            name="book_hotel",
            action="HotelService.BookRoom",
            compensation="HotelService.CancelRoom",
            timeout=TIMEOUT,
        ),
        Step(
            name="book_flight",
            action="FlightService.BookSeat",
            compensation="FlightService.CancelSeat",
            timeout=TIMEOUT,
            retry=RetryPolicy(max_attempts=3, initial_delay=timedelta(seconds=1)),
        ),
        Step(
            name="rent_car",
            action="CarService.RentCar",
            compensation="CarService.ReturnCar",
            timeout=TIMEOUT,
        ),
    ],
)
