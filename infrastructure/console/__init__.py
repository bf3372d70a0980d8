"""The operations console: sagas, stuck sagas, one saga's story and the operator actions, on
a web page and a JSON API (``sagalog console``; the ``console`` extra).

It reads through the projections' query functions and acts through ``SagaManager`` exactly
as the CLI does; see docs/console.md.
"""
