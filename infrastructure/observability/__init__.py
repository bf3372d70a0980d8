"""Observability.

Prometheus metrics, structured correlated logs, and the health of the worker's dependencies.
"""
