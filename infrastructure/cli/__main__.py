"""``python -m sagalog.infrastructure.cli``: the ``sagalog`` command."""

from sagalog.infrastructure.cli import main

main()
