"""``sagalog console``: the operations console, a web page and a JSON API (the console extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sagalog.infrastructure.cli.app import app, errors_as_one_line, fail
from sagalog.infrastructure.cli.opening import catch_up, opened
from sagalog.infrastructure.cli.options import AppOption, DatabaseUrlOption, DefinitionsOption
from sagalog.infrastructure.cli.output import err_console

#: Addresses that only this machine reaches; anything else is said out loud.
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


@app.command()
def console(
    database_url: DatabaseUrlOption = None,
    app: AppOption = None,
    definitions: DefinitionsOption = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback unless you mean otherwise).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8420,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="A file holding the operator token that enables actions (else "
            "SAGALOG_CONSOLE_TOKEN; without either the console is read-only).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the operations console: overview, sagas, stuck sagas, one saga, actions."""
    try:
        import uvicorn

        from sagalog.infrastructure.console.app import create_app
        from sagalog.infrastructure.console.guard import ConsoleGuard, read_token
        from sagalog.infrastructure.console.reading import ConsoleStore
    except ImportError:
        raise fail(
            "sagalog console needs the console extra: pip install 'sagalog[console]'"
        ) from None
    with errors_as_one_line():
        token = read_token(token_file)
    with opened(database_url, app, definitions) as (manager, projector):
        catch_up(projector)
        web = create_app(ConsoleStore(manager, projector), ConsoleGuard(token))
        mode = "read-only" if token is None else "actions need the operator token"
        err_console.print(
            f"sagalog console on http://{host}:{port}/ ({mode})", highlight=False, soft_wrap=True
        )
        if host not in _LOOPBACK:
            err_console.print(
                f"[bold yellow]listening on {host}: reachable from other machines[/]",
                highlight=False,
            )
        # No access log: request lines would carry saga ids and filter text into logs.
        uvicorn.run(web, host=host, port=port, access_log=False, log_level="warning")
