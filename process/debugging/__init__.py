"""The debugging room: a saga explained from its own log; nothing here writes.

Time travel (``replay``), the story in words (``explain``), the same inputs under another
definition (``whatif``) and the timeline chart (``timeline``). See docs/debugging.md.
"""
