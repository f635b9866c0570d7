"""Expected failures of the command line as one line on stderr and exit status 2.

A wrong URL, an unreachable server or a task id that is not queued are not bugs: the user gets
what went wrong and how to fix it, never a traceback. Anything else keeps its traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import typer
from alembic.util.exc import CommandError
from rich.console import Console
from rich.text import Text
from sqlalchemy.engine import URL
from typer.core import TyperGroup

from syncbus.errors import SyncBusError

EXIT_ERROR = 2
FIX_URL = "correct --db or SYNCBUS_DATABASE_URL"

# soft_wrap: an error stays on one line whatever the terminal's width.
err_console = Console(stderr=True, soft_wrap=True)


class _Opened:
    """The database URL the running command opened, to name it in error messages."""

    url: URL | None = None


opened = _Opened()


def report(message: str) -> None:
    """Print ``error: message`` on one line of stderr (the message is never read as markup)."""
    err_console.print(Text.assemble(("error: ", "bold red"), " ".join(message.splitlines())))


class OneLineErrors(TyperGroup):
    """The root command group: turns expected failures into one line and exit status 2."""

    # ``ctx`` is Typer's vendored click Context, which Typer does not export by name.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (SyncBusError, sa.exc.DBAPIError, CommandError) as exc:
            report(describe(exc, opened.url))
            raise typer.Exit(EXIT_ERROR) from exc


def describe(exc: Exception, url: URL | None) -> str:
    if isinstance(exc, sa.exc.DBAPIError):
        return _database_error(exc, url)
    if isinstance(exc, CommandError):
        return (
            f"cannot migrate the database schema: {exc}; the database may come from a newer "
            "syncbus: upgrade syncbus, or " + FIX_URL
        )
    return str(exc)


def _driver_message(exc: sa.exc.DBAPIError) -> str:
    text = str(exc.orig if exc.orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc.orig).__name__


def _database_error(exc: sa.exc.DBAPIError, url: URL | None) -> str:
    message = _driver_message(exc)
    if url is not None and url.get_backend_name() == "sqlite":
        return _sqlite_error(message, url)
    if url is not None and url.get_backend_name() == "postgresql":
        return _postgresql_error(message, url)
    return f"database error: {message}"


def _sqlite_error(message: str, url: URL) -> str:
    path = Path(url.database or "")
    if message == "unable to open database file":
        if not path.parent.exists():
            return (
                f"cannot open the SQLite database {path}: the directory {path.parent} does not "
                f"exist; create it, or {FIX_URL}"
            )
        return f"cannot open the SQLite database {path}: check the path and its permissions"
    if message == "file is not a database":
        return f"{path} is not a SQLite database; {FIX_URL}"
    if message == "database is locked":
        return f"the SQLite database {path} is locked by another process; try again"
    return f"SQLite database {path}: {message}"


def _postgresql_error(message: str, url: URL) -> str:
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    # psycopg reports connection failures without an SQLSTATE: read the server's words.
    detail = re.sub(r"^connection failed: (connection to server at .*? failed: )?", "", message)
    detail = re.sub(r"^FATAL:\s+", "", detail)
    missing = re.search(r'database "(.+)" does not exist', detail)
    if missing:
        name = missing.group(1)
        return (
            f"PostgreSQL database {name!r} does not exist on {where}: create it "
            f"(createdb {name}), or {FIX_URL}"
        )
    if re.search(r"role .* does not exist|authentication failed", detail):
        return f"PostgreSQL at {where} refused the login: {detail}; fix the user or password"
    if message.startswith(("connection failed", "failed to resolve host")):
        return f"cannot connect to PostgreSQL at {where}: {detail}; start the server, or {FIX_URL}"
    return f"PostgreSQL at {where}: {message}"
