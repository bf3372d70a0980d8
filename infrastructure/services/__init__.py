"""The services room: what a participant service needs to take part in sagas.

The participant helper (``participant``), fencing against commands that come too late or
were superseded (``fencing``), and choreography next to orchestration
(``choreography``). See docs/services.md.
"""
