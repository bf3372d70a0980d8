"""The manager's store plumbing.

Database URLs, the stored-event codec, the timer index and SQLite's WAL switch.
"""
