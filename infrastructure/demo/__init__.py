"""The demo room: what `sagalog demo` runs, shipped as an example.

Example saga definitions (``sagas``), simulated participants on a manual clock and the
runner (``runner``), and the same demo across processes over RabbitMQ (``participant``,
``rabbitmq``). Nothing in the library imports this room. See docs/demo.md.
"""
