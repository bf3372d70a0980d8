"""The messaging room: how commands leave the log, and which messages are trusted.

The command relay (``relay``: the saga log is the outbox), the transports it hands
commands to (``transport``), the observer that follows the log for metrics and logs
(``observer``), and the bounds (``bounds``) and signatures (``signing``) every message
read from a broker must pass. See docs/messaging.md.
"""
