"""The demo.

Example sagas, simulated participant services, and the runner behind ``sagalog demo``.
"""
