"""The persistence room: eventsourcing recorders that also keep the saga timer index.

Memory and SQLite (``recorders``) and PostgreSQL (``postgres``, needing psycopg), and the
store's lease (``lease``) that decides which worker runs the relay and the timers, and the
workers' heartbeat rows (``heartbeats``) that share out the reply partitions. The
manager never imports this room: its environment names the recorders by topic, and
eventsourcing imports them, as it does its own. See docs/persistence.md.
"""
