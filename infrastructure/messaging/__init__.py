"""Messaging.

The command relay (the saga log is the outbox), transports, the log observer, and message
bounds and signatures.
"""
