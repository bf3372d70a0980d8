"""The store room: how the process manager keeps its log.

Database URLs (``url``), the stored-event codec (``codec``), the durable timer index
(``timers``), SQLite's WAL switch (``sqlite``), which managers a store holds
(``contents``) and the one run-until-stopped loop (``loops``). See docs/store.md.
"""
