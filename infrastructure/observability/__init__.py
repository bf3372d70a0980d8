"""The observability room: what an operator sees of a running system.

Prometheus metrics derived from the saga log (``metrics``), structured logs correlated by
saga id (``logs``), and the health of the worker's dependencies (``health``). See
docs/observability.md.
"""
