"""Persistence.

Eventsourcing recorders for SQLite, PostgreSQL and memory that also keep the saga timer
index.
"""
