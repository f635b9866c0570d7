"""The ``syncbus`` command line (Typer + Rich).

Text that comes from users or connectors (titles, errors, names) is printed as ``Text``, never
read as Rich markup. Expected failures end in one line on stderr and exit status 2
(``cli_errors``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from pydantic import TypeAdapter
from rich.console import Console
from rich.table import Table
from rich.text import Text

from syncbus import cli_history as history
from syncbus import readmodel
from syncbus.bus import IntegrationBus
from syncbus.cli_errors import FIX_URL, OneLineErrors, err_console, opened, report
from syncbus.errors import (
    ConfigurationError,
    ConnectorLoadError,
    ConnectorNotFoundError,
    SyncBusError,
    TaskBusyError,
    TaskNotFoundError,
)
from syncbus.model import (
    ConnectorInfo,
    ProcessResult,
    SyncLogEntry,
    TaskInfo,
    TaskRecord,
    WorkerInfo,
)
from syncbus.store.db import resolve_url

app = typer.Typer(
    cls=OneLineErrors,
    help="syncbus: an integration bus that brings external data into your content repository.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="Inspect and act on queued incoming tasks.", no_args_is_help=True)
connectors_app = typer.Typer(
    help="Register, list, enable and disable connectors.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
objects_app = typer.Typer(help="Read the content repository's objects.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(connectors_app, name="connectors")
app.add_typer(db_app, name="db")
app.add_typer(objects_app, name="objects")
pages_app = typer.Typer(help="Read the content repository's pages.", no_args_is_help=True)
app.add_typer(pages_app, name="pages")

# Rich wraps at 80 columns when its output is not a terminal (a pipe, a file): a row of `tasks
# list` then breaks across lines and `grep` misses it. Piped, the tables are as wide as their
# rows (a COLUMNS in the environment still decides).
PIPED_WIDTH = 1000
console = Console(
    width=PIPED_WIDTH if not sys.stdout.isatty() and "COLUMNS" not in os.environ else None
)

# The API's own types, serialised the way FastAPI serialises them, so that --json and the HTTP
# API cannot drift apart.
_TASKS = TypeAdapter(list[TaskInfo])
_TASK = TypeAdapter(TaskInfo)
_CONNECTORS = TypeAdapter(list[ConnectorInfo])
_LOG = TypeAdapter(list[SyncLogEntry])
_WORKERS = TypeAdapter(list[WorkerInfo])

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="SYNCBUS_DATABASE_URL",
        help="Database URL (sqlite:///file.db or postgresql://user@host/db).",
        show_default="sqlite:///syncbus.db",
    ),
]


class _State:
    db: str | None = None


_state = _State()


@app.callback()
def _main(db: DbOption = None) -> None:
    _state.db = db
    opened.url = None


def _new_sqlite_file(url: str | None) -> Path | None:
    """The SQLite file that opening ``url`` would create, or None (it exists, or not SQLite)."""
    try:
        resolved = resolve_url(url)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{exc} ({FIX_URL})") from exc
    except (sa.exc.ArgumentError, ValueError) as exc:  # e.g. a port that is not a number
        raise ConfigurationError(f"cannot parse database URL: {exc} ({FIX_URL})") from exc
    path = resolved.database
    if resolved.get_backend_name() != "sqlite" or path in (None, "", ":memory:"):
        return None
    return None if Path(path).exists() else Path(path).resolve()


def _open(
    db: str | None,
    *,
    may_create: bool = False,
    existing: bool = False,
    schema: bool = True,
    log_load_failures: bool = True,
    **kwargs: Any,
) -> IntegrationBus:
    """The bus on --db, else SYNCBUS_DATABASE_URL, else ./syncbus.db.

    Only commands that set up (``may_create``) may create the implicit ./syncbus.db: anywhere
    else its absence means the command runs in the wrong folder. A command that shows or acts
    on what a database holds (``existing``) does not create a named SQLite file either: the
    path is mistyped, and an empty new database would look like an empty queue (commands
    that set up or run, such as ``worker`` or ``connectors add``, do create it, as a fresh
    deployment starts them before anything else). A command that only shows or
    edits (``log_load_failures`` False) reports a connector it cannot load to its caller alone,
    not in the event log.
    """
    url = db or _state.db
    new_file = _new_sqlite_file(url)
    if new_file is not None and url is None and not may_create:
        raise ConfigurationError(
            f"no database at ./{new_file.name} ({new_file}): pass --db or set "
            "SYNCBUS_DATABASE_URL, or run `syncbus db upgrade` to create one here"
        )
    if new_file is not None and may_create:
        err_console.print(Text(f"creating a new SQLite database at {new_file}"))
    try:
        bus = IntegrationBus(url, **kwargs)
    except sa.exc.ArgumentError as exc:  # e.g. a driver that is not installed
        raise ConfigurationError(f"cannot use database URL: {exc} ({FIX_URL})") from exc
    opened.url = bus.engine.url
    if new_file is not None and existing and new_file.parent.is_dir():
        bus.close()  # nothing was opened: the file is not made
        raise ConfigurationError(
            f"no database at {new_file} (a mistyped path?): run `syncbus db upgrade --db "
            f"sqlite:///{new_file}` to create one there"
        )
    bus.connectors.log_failures = log_load_failures
    if schema:
        try:
            bus.create_schema()
        except BaseException:
            bus.close()
            raise
    return bus


# Cells fold rather than end in "…": a title or an error is worth reading whole.
_FULL: dict[str, Any] = {"overflow": "fold"}


def _say(*parts: str | tuple[str, str]) -> None:
    """One line on stdout; plain strings are printed as they are, never read as markup."""
    console.print(Text.assemble(*parts), soft_wrap=True)


def _outcome(r: ProcessResult) -> Text:
    if r.not_run_reason:
        return Text(f"not run: {r.not_run_reason}", style="yellow")
    if r.stopped:
        return Text(f"stopped: {r.error}", style="red")
    return Text("done", style="green") if not r.failed else Text(str(r.error), style="yellow")


def _results_table(results: dict[str, ProcessResult]) -> Table:
    table = Table(title="Processing")
    for col in ("connector", "applied", "failed", "skipped", "deleted", "waiting", "outcome"):
        table.add_column(col, justify="right" if col in ("applied", "failed") else "left", **_FULL)
    for name, r in results.items():
        counts = (str(n) for n in (r.applied, r.failed, r.skipped, r.deleted, r.waiting))
        table.add_row(Text(name), *counts, _outcome(r))
    return table


@app.command()
def process(
    connector: Annotated[
        str | None, typer.Option("--connector", "-c", help="Only this connector.")
    ] = None,
    db: DbOption = None,
    apply_timeout: ApplyTimeoutOption = 300.0,
) -> None:
    """Process queued incoming tasks (all connectors, or one); then apply the history and
    idempotency-key retentions, as workers do in the background (a cron job of `process`
    runs no worker)."""
    with _open(db, apply_timeout=apply_timeout) as bus:
        results = bus.process_tasks(connector)
        pruned = _prune_quietly(bus)
    if not results:
        console.print("Nothing to process: the queue is empty.")
    else:
        console.print(_results_table(results))
    if pruned is not None and any(pruned):
        _say(_pruned_text(*pruned))
    if any(r.stopped for r in results.values()):
        raise typer.Exit(code=2)


def _prune_quietly(bus: IntegrationBus) -> tuple[int, int] | None:
    """``bus.prune()`` after a pass: its failure is said on stderr and fails nothing (the
    next pass, or a worker, prunes)."""
    try:
        return bus.prune()
    except sa.exc.SQLAlchemyError as exc:
        err_console.print(Text(f"warning: could not apply the retentions: {exc}"))
        return None


def _pruned_text(records: int, keys: int) -> str:
    return (
        f"pruned {records} task record{'' if records == 1 else 's'} and {keys} idempotency "
        f"key{'' if keys == 1 else 's'} past their retention"
    )


def _print_json(adapter: TypeAdapter[Any], value: Any) -> None:
    # Plain stdout, not Rich: machine output must come out byte for byte as serialised.
    typer.echo(adapter.dump_json(value, indent=2).decode())


@tasks_app.command("list")
def tasks_list(
    connector: Annotated[str | None, typer.Option("--connector", "-c")] = None,
    lane: Annotated[
        str | None,
        typer.Option("--lane", help="Only this lane's tasks (its exact key: cms.user/alice)."),
    ] = None,
    waiting: Annotated[
        bool, typer.Option("--waiting", help="Only tasks waiting for a missing reference.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, as GET /api/tasks lists them.")
    ] = False,
    db: DbOption = None,
) -> None:
    """List pending and failed incoming tasks in queue order."""
    with _open(db, existing=True) as bus:
        if connector is not None and not bus.connectors.exists(connector):
            raise ConnectorNotFoundError(
                f"no connector named {connector!r}; see `syncbus connectors list`"
            )
        tasks = bus.list_tasks(connector, lane=lane, waiting=waiting)
    if as_json:
        _print_json(_TASKS, tasks)
        return
    console.print(_tasks_table(tasks))


def _tasks_table(tasks: list[TaskInfo]) -> Table:
    """The queue as a table; with a lane column when a task has one (Ordering.ENTITY)."""
    lanes = any(t.lane is not None for t in tasks)
    table = Table(title=f"Incoming tasks ({len(tasks)})")
    for col in ("id", "connector", "title", "process type", "site", "lane", "result"):
        if col != "lane" or lanes:
            table.add_column(col, **_FULL)
    for t in tasks:
        result = _result(t)
        lane = [Text(t.lane or "")] if lanes else []
        table.add_row(
            str(t.task_id),
            Text(t.connector_name),
            Text(t.title),
            t.process_type.value,
            Text(t.site_name or ""),
            *lane,
            result,
        )
    return table


def _next_try(t: TaskInfo) -> str:
    """`` (attempt 2, next try in 4 min)`` for a task backing off (CONTRACT §9)."""
    if t.next_attempt_at is None:
        return ""
    left = (t.next_attempt_at - dt.datetime.now(dt.UTC)).total_seconds()
    when = "now" if left <= 0 else f"in {_span(left)}"
    return f" (attempt {t.attempts}, next try {when})"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _result(t: TaskInfo) -> Text:
    if t.error_message:
        return Text(f"Failed: {t.error_message}{_next_try(t)}", style="red")
    if t.waiting_for:
        since = f" since {t.waiting_since:%Y-%m-%d %H:%M:%S} UTC" if t.waiting_since else ""
        return Text(f"waiting for {t.waiting_for}{since}", style="yellow")
    return Text("pending")


@tasks_app.command("show")
def tasks_show(
    task_id: int,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the task's record as JSON, as GET /api/tasks/ID/history."
        ),
    ] = False,
    db: DbOption = None,
) -> None:
    """Show one task: a queued one as GET /api/tasks/ID with its stored data, state and error
    history; a finished one (within the history retention) with its outcome, changes,
    translations and errors."""
    with _open(db, existing=True) as bus:
        record = bus.task_history(task_id)
        task = None if as_json else bus.get_task(task_id)
        if record is None and task is None:
            days = bus.settings.history_retention_days
            raise TaskNotFoundError(
                f"no task with id {task_id}: not queued, and no record of it (unknown id, or "
                f"it finished more than {days} days ago); see `syncbus tasks list`"
            )
        if task is not None:
            _show_queued(bus, task, record)
            return
    assert record is not None
    if as_json:
        history.print_records_json([record], one=True)
    else:
        history.print_view(console, record)


def _show_queued(bus: IntegrationBus, task: TaskInfo, record: TaskRecord | None) -> None:
    """A queued task as GET /api/tasks/ID, its state, stored data, error history and hint."""
    task = readmodel.with_hint(bus, task)
    data = bus.get_task_data(task.task_id)
    log = bus.task_log(task.task_id)
    _print_json(_TASK, task)
    if record is not None:
        console.print(Text.assemble(("state ", "bold"), history.state_text(record)))
        if record.external is not None:  # what `tasks replace` takes, edited
            _say(("external object (as logged)", "bold"))
            console.print_json(data=record.external)
    _say(("data (as stored: the internal object and its translation records)", "bold"))
    try:
        console.print_json(data or "null")
    except json.JSONDecodeError:  # a corrupt task: show what is stored, as it is
        _say(("(not JSON: the stored data is corrupt) ", "red"), data or "")
    if log:
        _say(("error history", "bold"))
        for entry in _LOG.dump_python(log, mode="json"):
            _say(entry["time"], "  ", entry["error_message"])
    if task.hint:
        _say(("how to fix: ", "bold"), task.hint)


@objects_app.command("show")
def objects_show(
    object_spec: Annotated[
        str, typer.Argument(help="The object as TYPE/CODE_NAME (or GUID), e.g. cms.user/alice.")
    ],
    site: Annotated[str | None, typer.Option("--site", help="Its site (site-bound types).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, as GET /api/objects/TYPE/NAME.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Show an object as it is now in the content repository, every column."""
    object_type, code_name = history.parse_object(object_spec, "")
    with _open(db, existing=True) as bus:
        found = readmodel.plain(readmodel.current_object(bus, object_type, code_name, site))
    if as_json:
        typer.echo(json.dumps({"object_type": object_type, "object": found}, indent=2))
        return
    _print_row(f"{object_type} {code_name!r}" + (f" on {site}" if site else ""), found)


def _print_row(title: str, row: dict[str, Any]) -> None:
    """A content row (as JSON carries it) as a table of its columns and values."""
    table = Table(title=title)
    table.add_column("column", **_FULL)
    table.add_column("value", **_FULL)
    for column, value in row.items():
        table.add_row(Text(column), Text("null" if value is None else json.dumps(value)))
    console.print(table)


@pages_app.command("show")
def pages_show(
    site: Annotated[str, typer.Argument(help="The page's site, e.g. main.")],
    alias_path: Annotated[str, typer.Argument(help="Its alias path, e.g. /news/launch.")],
    culture: Annotated[str, typer.Option("--culture", help="The document's culture.")] = "en-US",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, as GET /api/pages/SITE/PATH.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Show a page as it is now: its node, its document in one culture, its fields."""
    with _open(db, existing=True) as bus:
        found = readmodel.plain(readmodel.current_page(bus, site, alias_path, culture))
    path, culture = str(found["node_alias_path"]), str(found["document_culture"])
    if as_json:
        answer = {"site_name": site, "alias_path": path, "culture": culture, "page": found}
        typer.echo(json.dumps(answer, indent=2))
        return
    _print_row(f"page {path!r} on {site} ({culture})", found)


@tasks_app.command("history")
def tasks_history(
    object_spec: Annotated[
        str,
        typer.Option(
            "--object", help="The object as TYPE/CODE_NAME (or GUID), e.g. cms.user/alice."
        ),
    ],
    site: Annotated[str | None, typer.Option("--site", help="Only records on this site.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print JSON, as GET /api/objects/TYPE/NAME/history."),
    ] = False,
    db: DbOption = None,
) -> None:
    """List the tasks that wrote an object, newest first (within the history retention)."""
    object_type, code_name = history.parse_object(object_spec)
    with _open(db, existing=True) as bus:
        records = bus.object_history(object_type, code_name, site, limit=limit)
    if as_json:
        history.print_records_json(records)
        return
    title = f"History of {object_type} {code_name!r}" + (f" on {site}" if site else "")
    console.print(history.history_table(f"{title} ({len(records)})", records))


@contextlib.contextmanager
def _queued_only(bus: IntegrationBus, task_id: int) -> Iterator[None]:
    """An action on a queued task: a task that left the queue is said to have, with how it
    went and where its record is (as the HTTP API says), not only "no queued task"."""
    try:
        yield
    except TaskNotFoundError as exc:
        record = bus.task_history(task_id)
        if record is None or record.finished_at is None:
            raise
        raise TaskNotFoundError(
            f"no queued task with id {task_id}: it left the queue ({record.state} at "
            f"{record.finished_at.isoformat()}); what happened to it: "
            f"`syncbus tasks show {task_id}`"
        ) from exc


@tasks_app.command("replace")
def tasks_replace(
    task_id: int,
    file: Annotated[
        str,
        typer.Option("--file", "-f", help="The new external object as JSON; - for stdin."),
    ],
    sync: Annotated[
        bool, typer.Option("--sync", help="Then run the task now, as `tasks sync`.")
    ] = False,
    db: DbOption = None,
) -> None:
    """Edit and replay: give a queued or failed task a new external object (prepared by its
    connector as at logging; same id and place in its queue, error history kept)."""
    new_object = history.read_object(file)
    with _open(db, existing=True, log_load_failures=False) as bus:
        try:
            with _queued_only(bus, task_id):
                bus.replace_task_object(task_id, new_object, by="syncbus tasks replace")
        except (SyncBusError, sa.exc.SQLAlchemyError):
            raise
        except Exception as exc:  # raised by the connector's code: the object is bad input
            raise history.usage_error(
                f"task {task_id} was left as it was: the connector could not prepare the "
                f"object: {type(exc).__name__}: {exc}"
            ) from exc
        if not sync:
            _say(
                f"task {task_id}: object replaced (same id, same place in its queue); run "
                f"`syncbus tasks sync {task_id}` to apply it now"
            )
            return
        _say(f"task {task_id}: object replaced (same id, same place in its queue)")
    _sync(task_id, db, replaced=True)


@tasks_app.command("sync")
def tasks_sync(task_id: int, db: DbOption = None) -> None:
    """Run one task now, out of order, as DEFAULT."""
    _sync(task_id, db)


def _sync(task_id: int, db: str | None, *, replaced: bool = False) -> None:
    with _open(db, existing=True) as bus, _queued_only(bus, task_id):
        applied = _sync_replaced(bus, task_id) if replaced else bus.synchronize_task(task_id)
        task = None if applied else bus.get_task(task_id)
        if task is not None:
            task = readmodel.with_hint(bus, task)
    if not applied:
        # The command worked; the task did not: exit status 1, as for any failed run.
        report(f"task {task_id} failed: {task.error_message if task else ''}")
        if task is not None and task.hint:
            _say(("how to fix: ", "bold"), task.hint)
        raise typer.Exit(code=1)
    _say((f"task {task_id} applied", "green"))


def _sync_replaced(bus: IntegrationBus, task_id: int, wait_s: float = 30.0) -> bool:
    """``synchronize_task`` right after a replace, which woke the workers: one may be
    applying the task (busy: wait for its batch, then run the task if it is still queued) or
    have applied it already (no longer queued: its record says how it went)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return bus.synchronize_task(task_id)
        except TaskBusyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        except TaskNotFoundError:
            record = bus.task_history(task_id)
            if record is None or record.state != "applied":
                raise
            _say(f"task {task_id}: a worker applied it right after the replace")
            return True


@tasks_app.command("delete")
def tasks_delete(task_id: int, db: DbOption = None) -> None:
    """Delete one task from the queue."""
    with _open(db, existing=True) as bus, _queued_only(bus, task_id):
        bus.delete_task(task_id, by="syncbus tasks delete")
    _say(f"task {task_id} deleted")


def _load_errors(bus: IntegrationBus) -> dict[str, str]:
    """Why each connector that this process cannot load fails to load (by name).

    Loading is what logging a task does first, so a connector that fails here cannot take
    tasks in a process set up like this one.
    """
    errors: dict[str, str] = {}
    for info in bus.list_connectors():
        try:
            bus.get_connector(info.name)
        except ConnectorLoadError as exc:
            errors[info.name] = str(exc)
    return errors


@connectors_app.command("list")
def connectors_list(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, as GET /api/connectors lists them.")
    ] = False,
    db: DbOption = None,
) -> None:
    """List registered connectors with their queues, and why any fails to load here."""
    with _open(db, existing=True, log_load_failures=False) as bus:
        errors = _load_errors(bus)
        infos = [
            dataclasses.replace(c, load_error=errors.get(c.name, c.load_error))
            for c in bus.list_connectors()
        ]
    if as_json:
        _print_json(_CONNECTORS, infos)
        return
    table = Table(title="Connectors")
    columns = (
        "name", "display name", "class", "ordering", "enabled", "pending", "limit", "failed",
        "loads",
    )  # fmt: skip
    for col in columns:
        table.add_column(col, **_FULL)
    for c in infos:
        table.add_row(
            Text(c.name),
            Text(c.display_name),
            Text(c.class_path or "(not importable)"),
            c.ordering.value,
            Text("yes") if c.enabled else Text("no", style="yellow"),
            str(c.pending),
            "-" if c.queue_limit is None else str(c.queue_limit),
            str(c.failed),
            Text("no: see below", style="red") if c.load_error else Text("yes"),
        )
    console.print(table)
    for c in infos:
        if c.load_error:
            _say(("load error: ", "red"), c.load_error)  # it names the connector


@app.command("workers")
def workers_list(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON, as GET /api/workers lists them.")
    ] = False,
    db: DbOption = None,
) -> None:
    """List the processes that run connectors (serve, worker), alive or stopped reporting."""
    with _open(db, existing=True, log_load_failures=False) as bus:
        found = bus.list_workers()
        queued = bus.queue_size()
    if as_json:
        _print_json(_WORKERS, found)
        return
    alive = sum(1 for w in found if w.alive)
    table = Table(title=f"Workers ({alive} alive)")
    for col in ("kind", "host", "pid", "runs at once", "started", "last seen", "alive"):
        table.add_column(col, **_FULL)
    for w in found:
        table.add_row(
            w.kind,
            Text(w.host),
            str(w.pid),
            str(w.threads),
            w.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            f"{w.seen_seconds_ago:.0f} s ago",
            Text("yes") if w.alive else Text("no", style="red"),
        )
    console.print(table)
    if alive < len(found):
        _say(
            ("not alive", "red"),
            ": stopped reporting without stopping (killed, frozen or cut off); listed for an "
            "hour after it was last seen",
        )
    if not alive:
        waiting = (
            f": the {queued} queued task{'s' if queued != 1 else ''} wait for `syncbus serve` "
            "or `syncbus worker` (or `syncbus process`)"
            if queued
            else ""
        )
        _say(("no worker is running", "yellow"), waiting)


@connectors_app.command("add")
def connectors_add(
    class_path: Annotated[str, typer.Argument(help="Import path, e.g. 'mypkg.crm:CrmConnector'.")],
    db: DbOption = None,
) -> None:
    """Register a connector by its import path (its module must be importable: PYTHONPATH)."""
    with _open(db) as bus:
        connector = bus.register_connector(class_path)
    _say(f"connector {connector.connector_name!r} registered from {class_path}")


def _set_enabled(name: str, enabled: bool, db: str | None) -> None:
    with _open(db, existing=True) as bus:
        bus.set_connector_enabled(name, enabled)
    _say(f"connector {name!r} {'enabled' if enabled else 'disabled'}")


@connectors_app.command("enable")
def connectors_enable(name: str, db: DbOption = None) -> None:
    """Enable a connector: its tasks are logged and processed again."""
    _set_enabled(name, True, db)


@connectors_app.command("disable")
def connectors_disable(name: str, db: DbOption = None) -> None:
    """Disable a connector: logging is refused, its queued tasks wait."""
    _set_enabled(name, False, db)


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Create or migrate the schema to the newest revision."""
    from syncbus.store import migrate

    with _open(db, may_create=True, schema=False) as bus:
        with bus.engine.connect() as conn:
            before = migrate.current_revision(conn)
        changed = migrate.upgrade(bus.engine)
    head = migrate.head_revision()
    if changed:
        console.print(f"schema upgraded from revision {before or '(none: new database)'} to {head}")
    else:
        console.print(f"schema is up to date (revision {head})")


@db_app.command("prune")
def db_prune(db: DbOption = None) -> None:
    """Apply the retentions now: delete task records past `history_retention_days` and
    idempotency keys past `idempotency_retention_days` (workers do it every 10 minutes)."""
    with _open(db, existing=True) as bus:
        records, keys = bus.prune()
    _say(_pruned_text(records, keys))


WorkersOption = Annotated[
    int, typer.Option("--workers", envvar="SYNCBUS_WORKERS", help="Connector runs at once.", min=1)
]
HeartbeatOption = Annotated[
    float,
    typer.Option(
        "--heartbeat",
        envvar="SYNCBUS_HEARTBEAT_SECONDS",
        help="Seconds between this process's reports that it is alive (the admin's workers; "
        "not alive after three missed).",
        min=0.1,
    ),
]
ServeWorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        envvar="SYNCBUS_WORKERS",
        help="Connector runs at once (0: the API and admin only; `syncbus worker` processes "
        "apply the queue).",
        min=0,
    ),
]
IntervalOption = Annotated[
    float,
    typer.Option(
        "--scheduler-interval",
        envvar="SYNCBUS_SCHEDULER_INTERVAL",
        help="Seconds between scheduled 'process external tasks' runs (0: off).",
        min=0,
    ),
]
SchedulerConnectorOption = Annotated[
    str | None,
    typer.Option(
        "--scheduler-connector",
        envvar="SYNCBUS_SCHEDULER_CONNECTOR",
        help="Let the scheduler process only this connector.",
    ),
]
LeaseOption = Annotated[
    float,
    typer.Option(
        "--lease-seconds",
        envvar="SYNCBUS_LEASE_SECONDS",
        help="How long a crashed worker holds a connector before another takes over.",
        min=1,
    ),
]
ApplyTimeoutOption = Annotated[
    float,
    typer.Option(
        "--apply-timeout",
        envvar="SYNCBUS_APPLY_TIMEOUT",
        help="Seconds a statement applying tasks may run before it is cancelled and its task "
        "fails (PostgreSQL; 0: no limit).",
        min=0,
    ),
]
BatchOption = Annotated[
    int,
    typer.Option("--batch-size", envvar="SYNCBUS_BATCH_SIZE", help="Tasks per transaction.", min=1),
]


TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="SYNCBUS_API_TOKEN",
        help="The API and admin token (better in SYNCBUS_API_TOKEN: arguments show in ps).",
        show_default=False,
    ),
]
NoAuthOption = Annotated[
    bool,
    typer.Option("--no-auth", help="Serve without any authentication (trusted networks only)."),
]


def _serve_token(token: str | None, no_auth: bool) -> str | None:
    """The token to require, or None with --no-auth; a blank token is no token."""
    given = (token or "").strip()
    if no_auth and given:
        raise ConfigurationError(
            "--no-auth and a token (--token or SYNCBUS_API_TOKEN) are both given: drop one"
        )
    if not no_auth and not given:
        what = "the API token is blank" if token else "no API token"
        raise ConfigurationError(
            f"{what}: set SYNCBUS_API_TOKEN (or pass --token) to protect the API and the "
            "admin UI, or pass --no-auth to serve without authentication"
        )
    return given or None


def _warn_load_errors(bus: IntegrationBus) -> None:
    for error in _load_errors(bus).values():  # each names its connector
        err_console.print(Text.assemble(("warning: ", "yellow"), error))


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option(envvar="SYNCBUS_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SYNCBUS_PORT", min=1, max=65535)] = 8000,
    workers: ServeWorkersOption = 4,
    scheduler_interval: IntervalOption = 60.0,
    scheduler_connector: SchedulerConnectorOption = None,
    lease_seconds: LeaseOption = 30.0,
    apply_timeout: ApplyTimeoutOption = 300.0,
    batch_size: BatchOption = 200,
    heartbeat: HeartbeatOption = 10.0,
    token: TokenOption = None,
    no_auth: NoAuthOption = False,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            envvar="SYNCBUS_PROCESSES",
            min=1,
            help="Server processes on the one port (each with its own workers).",
        ),
    ] = 1,
) -> None:
    """Run the HTTP service with the scheduler and in-process workers (--workers 0: the API and
    admin only, beside `syncbus worker` processes).

    The API and the admin UI require the token from SYNCBUS_API_TOKEN (or --token); without
    one, serve refuses to start unless --no-auth is given.
    """
    import uvicorn

    from syncbus.service import create_app
    from syncbus.service.server import GracefulServer, port_in_use, serve_processes

    api_token = _serve_token(token, no_auth)
    taken = port_in_use(host, port)
    if taken is not None:
        raise taken
    bus = _open(
        db,
        may_create=True,
        batch_size=batch_size,
        lease_seconds=lease_seconds,
        apply_timeout=apply_timeout,
    )
    _warn_load_errors(bus)

    def build(bus: IntegrationBus) -> Any:
        return create_app(
            bus,
            api_token,
            no_auth=no_auth,
            workers=workers,
            scheduler_interval=scheduler_interval or None,
            scheduler_connector=scheduler_connector,
            heartbeat=heartbeat,
        )

    url = bus.engine.url.render_as_string(hide_password=True)
    several = f", {processes} processes" if processes > 1 else ""
    _say(("syncbus serve", "bold"), f" on http://{host}:{port}, database {url}{several}")
    if workers == 0:
        _say(
            ("API only", "bold"),
            " (--workers 0): this service applies no task; run `syncbus worker` against the "
            "same database to process the queue",
        )
    if no_auth:
        warning = f"--no-auth: anyone who reaches http://{host}:{port} can change the queue"
        err_console.print(Text.assemble(("warning: ", "yellow"), warning))
    if processes > 1:
        bus.close()  # each process opens its own connections, after the fork

        def child() -> tuple[Any, Any]:
            own = _open(
                db, batch_size=batch_size, lease_seconds=lease_seconds, apply_timeout=apply_timeout
            )
            return build(own), own.close

        raise typer.Exit(serve_processes(processes, host, port, child))
    application = build(bus)
    server = GracefulServer(
        uvicorn.Config(application, host=host, port=port, log_level="info", lifespan="on")
    )
    # What is loaded now lives as long as the process: keep it out of the collector's work,
    # while serving and at exit (a full collection at interpreter exit took over a second).
    gc.freeze()
    try:
        server.run()
    finally:
        bus.close()


def _stacks_on_sigusr1() -> None:
    """`kill -USR1 PID` prints every thread's stack to stderr: where a stuck worker is stuck.

    The signal is blocked in this thread and so in every thread started after it; one thread
    of its own waits for it (``sigwait``) and prints the stacks as Python sees them. Not
    ``faulthandler``: it walks the other threads' states from inside the signal handler, and a
    worker whose runs start and end threads all the while died of it (SIGSEGV) about one time
    in three under a burst of signals."""
    import signal
    import threading
    import traceback

    wanted = {signal.SIGUSR1}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)

    def dump() -> None:
        while True:
            signal.sigwait(wanted)
            names = {t.ident: t.name for t in threading.enumerate()}
            parts = [f"--- stacks of {len(names)} threads (SIGUSR1)\n"]
            for ident, frame in sys._current_frames().items():
                parts.append(f"Thread {ident:#x} ({names.get(ident, 'unnamed')}):\n")
                parts.extend(traceback.format_stack(frame))
            sys.stderr.write("".join(parts))
            sys.stderr.flush()

    threading.Thread(target=dump, name="syncbus-stacks", daemon=True).start()


@app.command()
def worker(
    db: DbOption = None,
    workers: WorkersOption = 4,
    scheduler_interval: IntervalOption = 60.0,
    scheduler_connector: SchedulerConnectorOption = None,
    lease_seconds: LeaseOption = 30.0,
    apply_timeout: ApplyTimeoutOption = 300.0,
    batch_size: BatchOption = 200,
    heartbeat: HeartbeatOption = 10.0,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            envvar="SYNCBUS_GRACE_SECONDS",
            min=0.0,
            help="Seconds a SIGTERM waits for runs to finish the task in hand.",
        ),
    ] = 30.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            envvar="SYNCBUS_METRICS_PORT",
            min=1,
            max=65535,
            help="Serve this worker's Prometheus metrics at /metrics on this port (off unless "
            "given; no authentication: keep it on a private address).",
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            "--metrics-host", envvar="SYNCBUS_METRICS_HOST", help="Address of --metrics-port."
        ),
    ] = "127.0.0.1",
) -> None:
    """Process tasks without the HTTP service (as many workers as you like, on any machine).

    All workers share one database (PostgreSQL, or a SQLite file on this machine). Stops gracefully on SIGTERM or Ctrl-C: runs finish the task in hand and commit; past the grace period the worker exits anyway (status 1) and what was in flight rolls back, to be done by the next run."""  # noqa: E501
    import signal

    from syncbus.dispatcher import Dispatcher

    # Before any thread starts: every thread inherits SIGUSR1 blocked (``_stacks_on_sigusr1``).
    _stacks_on_sigusr1()
    bus = _open(db, batch_size=batch_size, lease_seconds=lease_seconds, apply_timeout=apply_timeout)

    class _Report:
        """Prints each run that did something (a subscriber of ``bus.hooks``)."""

        def run_finished(self, result: ProcessResult) -> None:
            if result.not_run_reason is None and (
                result.applied or result.failed or result.waiting
            ):
                err_console.print(
                    Text(
                        f"{result.connector_name}: applied {result.applied}, "
                        f"failed {result.failed}"
                        + (f", waiting {result.waiting}" if result.waiting else "")
                        + (f" (stopped: {result.error})" if result.stopped else "")
                    )
                )

    bus.hooks.subscribe(_Report())
    exporter = _serve_metrics(bus, metrics_host, metrics_port) if metrics_port else None
    dispatcher = Dispatcher(
        bus,
        workers=workers,
        scheduler_interval=scheduler_interval or None,
        scheduler_connector=scheduler_connector,
        kind="worker",
        heartbeat=heartbeat,
    )
    # The handler only appends to a list: it runs in the main thread between two bytecodes,
    # and one that took a lock (``Event.set``) could find it held by the very wait it
    # interrupted (``Event.wait`` holds the event's lock as it returns): the worker then
    # hung on SIGTERM forever, about one time in twenty.
    asked: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: asked.append(signum))
    dispatcher.start()
    err_console.print(
        f"syncbus worker started ({workers} worker{'s' if workers != 1 else ''}) on "
        f"{bus.engine.url.get_backend_name()}"
    )
    # Sleep in short steps: the kernel may deliver SIGTERM to one of the worker threads, and
    # Python runs the handler only when the main thread next runs bytecode.
    while not asked:
        time.sleep(0.2)
    err_console.print("stopping: finishing the tasks in hand")
    if not dispatcher.stop(grace):
        err_console.print(
            f"grace period of {grace:g} s over: exiting with runs in flight "
            "(their transactions roll back; nothing is lost)"
        )
        sys.stderr.flush()
        os._exit(1)  # threads stuck in the database would hold a normal exit forever
    if exporter is not None:
        exporter.shutdown()
    bus.close()
    err_console.print("stopped")


def _serve_metrics(bus: IntegrationBus, host: str, port: int) -> Any:
    """A worker's /metrics (what it applied, failed and quarantined, its runs' durations,
    the queue gauges), in a thread of its own; the server, to shut down at the end."""
    from prometheus_client import start_http_server

    from syncbus.service.metrics import ServiceMetrics

    metrics = ServiceMetrics(bus)
    bus.hooks.subscribe(metrics)
    try:
        server, _thread = start_http_server(port, host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another "
            "--metrics-port"
        ) from exc
    err_console.print(f"metrics at http://{host}:{port}/metrics")
    return server


@app.command()
def bench(
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help=(
                "smoke, quick, full, drain-smoke, drain-200k, drain-1m, latency, "
                "latency-smoke, admin-scale, admin-scale-smoke, lanes, lanes-smoke, bursty, "
                "bursty-smoke, load or load-smoke (lanes: PostgreSQL only; "
                "docs/performance.md)."
            ),
        ),
    ] = "quick",
    db: DbOption = None,
    json_path: Annotated[str | None, typer.Option("--json", help="Write the figures here.")] = None,
    chart: Annotated[str | None, typer.Option("--chart", help="Write a PNG chart here.")] = None,
) -> None:
    """Measure throughput against raw SQL floors and peer queues, or the latency from a POST
    to applied, or the admin pages over a long queue, or coalescing on bursty traffic, or a
    first load of new objects and pages (see docs/performance.md).

    On PostgreSQL, --db names a server: a scratch database is created and dropped."""
    from syncbus.bench import run_bench

    run_bench(profile, db or _state.db, json_path, console, chart)


@app.command()
def demo(db: DbOption = None) -> None:
    """Log the sample CRM data set through its connector, process it, and show the result;
    then send a new hire through the same connector under Ordering.ENTITY (entity lanes)."""
    from syncbus.examples.crm.demo import run_demo, run_entity_demo

    with _open(db, may_create=True, schema=False) as bus:
        _say(("syncbus demo", "bold"), f" on {bus.engine.url.render_as_string(hide_password=True)}")
        run_demo(bus, console)
        run_entity_demo(bus, console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
