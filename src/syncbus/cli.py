"""The ``syncbus`` command line (Typer + Rich)."""

from __future__ import annotations

import gc
import json
import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from syncbus.bus import IntegrationBus
from syncbus.errors import SyncBusError
from syncbus.model import ProcessResult, TaskInfo

app = typer.Typer(
    help="syncbus: an integration bus that brings external data into your content repository.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="Inspect and act on queued incoming tasks.", no_args_is_help=True)
connectors_app = typer.Typer(
    help="Register, list, enable and disable connectors.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(connectors_app, name="connectors")
app.add_typer(db_app, name="db")

console = Console()
err_console = Console(stderr=True)

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


def _bus(db: str | None) -> IntegrationBus:
    bus = IntegrationBus(db or _state.db)
    bus.create_schema()
    return bus


def _fail(exc: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc}")
    return typer.Exit(code=1)


def _results_table(results: dict[str, ProcessResult]) -> Table:
    table = Table(title="Processing")
    for col in ("connector", "applied", "failed", "skipped", "deleted", "outcome"):
        table.add_column(col, justify="right" if col in ("applied", "failed") else "left")
    for name, r in results.items():
        if r.not_run_reason:
            outcome = f"[yellow]not run: {r.not_run_reason}[/]"
        elif r.stopped:
            outcome = f"[red]stopped: {r.error}[/]"
        else:
            outcome = "[green]done[/]" if not r.failed else f"[yellow]{r.error}[/]"
        table.add_row(name, str(r.applied), str(r.failed), str(r.skipped), str(r.deleted), outcome)
    return table


@app.command()
def process(
    connector: Annotated[
        str | None, typer.Option("--connector", "-c", help="Only this connector.")
    ] = None,
    db: DbOption = None,
) -> None:
    """Process queued incoming tasks (all connectors, or one)."""
    try:
        with _bus(db) as bus:
            results = bus.process_tasks(connector)
    except SyncBusError as exc:
        raise _fail(exc) from exc
    if not results:
        console.print("Nothing to process: the queue is empty.")
        return
    console.print(_results_table(results))
    if any(r.stopped for r in results.values()):
        raise typer.Exit(code=2)


def _task_dict(t: TaskInfo) -> dict[str, Any]:
    return {
        "task_id": t.task_id,
        "connector_name": t.connector_name,
        "task_type": t.task_type.value,
        "data_type": t.data_type.value,
        "process_type": t.process_type.value,
        "object_type": t.object_type,
        "class_name": t.class_name,
        "title": t.title,
        "site_name": t.site_name,
        "created_at": t.created_at.isoformat(),
        "error_message": t.error_message,
        "is_running": t.is_running,
    }


@tasks_app.command("list")
def tasks_list(
    connector: Annotated[str | None, typer.Option("--connector", "-c")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    db: DbOption = None,
) -> None:
    """List pending and failed incoming tasks in queue order."""
    with _bus(db) as bus:
        tasks = bus.list_tasks(connector)
    if as_json:
        console.print_json(json.dumps([_task_dict(t) for t in tasks]))
        return
    table = Table(title=f"Incoming tasks ({len(tasks)})")
    for col in ("id", "connector", "title", "process type", "site", "result"):
        table.add_column(col)
    for t in tasks:
        result = f"[red]Failed: {t.error_message}[/]" if t.error_message else "pending"
        table.add_row(
            str(t.task_id),
            t.connector_name,
            t.title,
            t.process_type.value,
            t.site_name or "",
            result,
        )
    console.print(table)


@tasks_app.command("show")
def tasks_show(task_id: int, db: DbOption = None) -> None:
    """Show one task: its fields, stored data and error history."""
    with _bus(db) as bus:
        task = bus.get_task(task_id)
        if task is None:
            raise _fail(SyncBusError(f"no queued task with id {task_id}"))
        data = bus.get_task_data(task_id)
        log = bus.task_log(task_id)
    console.print_json(json.dumps(_task_dict(task)))
    console.print("[bold]data[/]")
    console.print_json(data or "null")
    if log:
        console.print("[bold]error history[/]")
        for entry in log:
            console.print(f"{entry.time.isoformat()}  {entry.error_message}")


@tasks_app.command("sync")
def tasks_sync(task_id: int, db: DbOption = None) -> None:
    """Run one task now, out of order, as DEFAULT."""
    try:
        with _bus(db) as bus:
            applied = bus.synchronize_task(task_id)
            task = None if applied else bus.get_task(task_id)
    except SyncBusError as exc:
        raise _fail(exc) from exc
    if applied:
        console.print(f"[green]task {task_id} applied[/]")
    else:
        raise _fail(SyncBusError(f"task {task_id} failed: {task.error_message if task else ''}"))


@tasks_app.command("delete")
def tasks_delete(task_id: int, db: DbOption = None) -> None:
    """Delete one task from the queue."""
    try:
        with _bus(db) as bus:
            bus.delete_task(task_id)
    except SyncBusError as exc:
        raise _fail(exc) from exc
    console.print(f"task {task_id} deleted")


@connectors_app.command("list")
def connectors_list(db: DbOption = None) -> None:
    """List registered connectors with their queues."""
    with _bus(db) as bus:
        infos = bus.list_connectors()
    table = Table(title="Connectors")
    for col in ("name", "display name", "class", "enabled", "pending", "failed"):
        table.add_column(col)
    for c in infos:
        table.add_row(
            c.name,
            c.display_name,
            c.class_path or "(not importable)",
            "yes" if c.enabled else "[yellow]no[/]",
            str(c.pending),
            str(c.failed),
        )
    console.print(table)


@connectors_app.command("add")
def connectors_add(
    class_path: Annotated[str, typer.Argument(help="Import path, e.g. 'mypkg.crm:CrmConnector'.")],
    db: DbOption = None,
) -> None:
    """Register a connector by its import path."""
    try:
        with _bus(db) as bus:
            connector = bus.register_connector(class_path)
    except SyncBusError as exc:
        raise _fail(exc) from exc
    console.print(f"connector {connector.connector_name!r} registered from {class_path}")


def _set_enabled(name: str, enabled: bool, db: str | None) -> None:
    try:
        with _bus(db) as bus:
            bus.set_connector_enabled(name, enabled)
    except SyncBusError as exc:
        raise _fail(exc) from exc
    console.print(f"connector {name!r} {'enabled' if enabled else 'disabled'}")


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

    bus = IntegrationBus(db or _state.db)
    try:
        changed = migrate.upgrade(bus.engine)
    except Exception as exc:
        raise _fail(exc) from exc
    finally:
        bus.close()
    console.print("schema upgraded" if changed else "schema is up to date")


WorkersOption = Annotated[
    int, typer.Option("--workers", envvar="SYNCBUS_WORKERS", help="Connector runs at once.", min=1)
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
BatchOption = Annotated[
    int,
    typer.Option("--batch-size", envvar="SYNCBUS_BATCH_SIZE", help="Tasks per transaction.", min=1),
]


@app.command()
def serve(
    db: DbOption = None,
    host: Annotated[str, typer.Option(envvar="SYNCBUS_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="SYNCBUS_PORT")] = 8000,
    workers: WorkersOption = 4,
    scheduler_interval: IntervalOption = 60.0,
    scheduler_connector: SchedulerConnectorOption = None,
    lease_seconds: LeaseOption = 30.0,
    batch_size: BatchOption = 200,
) -> None:
    """Run the HTTP service with the scheduler and in-process workers.

    The API token comes from SYNCBUS_API_TOKEN (no token: no authentication).
    """
    import uvicorn

    from syncbus.service import create_app
    from syncbus.service.server import GracefulServer

    bus = IntegrationBus(db or _state.db, batch_size=batch_size, lease_seconds=lease_seconds)
    bus.create_schema()
    application = create_app(
        bus,
        workers=workers,
        scheduler_interval=scheduler_interval or None,
        scheduler_connector=scheduler_connector,
    )
    console.print(
        f"[bold]syncbus serve[/] on http://{host}:{port} ({bus.engine.url.get_backend_name()})"
    )
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


@app.command()
def worker(
    db: DbOption = None,
    workers: WorkersOption = 4,
    scheduler_interval: IntervalOption = 60.0,
    scheduler_connector: SchedulerConnectorOption = None,
    lease_seconds: LeaseOption = 30.0,
    batch_size: BatchOption = 200,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            envvar="SYNCBUS_GRACE_SECONDS",
            min=0.0,
            help="Seconds a SIGTERM waits for runs to finish the task in hand.",
        ),
    ] = 30.0,
) -> None:
    """Process tasks without the HTTP service: run as many as you like, on any machine, against
    one PostgreSQL database. Stops gracefully on SIGTERM or Ctrl-C: runs finish the task in
    hand and commit; past the grace period the worker exits anyway (status 1) and what was in
    flight rolls back, to be done by the next run."""
    import signal
    import threading

    from syncbus.dispatcher import Dispatcher

    bus = IntegrationBus(db or _state.db, batch_size=batch_size, lease_seconds=lease_seconds)
    bus.create_schema()
    done = threading.Event()

    def report(result: ProcessResult) -> None:
        if result.not_run_reason is None and (result.applied or result.failed):
            err_console.print(
                f"{result.connector_name}: applied {result.applied}, failed {result.failed}"
                + (f" (stopped: {result.error})" if result.stopped else "")
            )

    dispatcher = Dispatcher(
        bus,
        workers=workers,
        scheduler_interval=scheduler_interval or None,
        scheduler_connector=scheduler_connector,
        on_result=report,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    dispatcher.start()
    err_console.print(
        f"syncbus worker started ({workers} workers) on {bus.engine.url.get_backend_name()}"
    )
    # Wait in short steps: the kernel may deliver SIGTERM to one of the worker threads, and
    # Python runs the handler only when the main thread next runs bytecode, which an untimed
    # wait() would never let it do.
    while not done.wait(0.5):
        pass
    err_console.print("stopping: finishing the tasks in hand")
    if not dispatcher.stop(grace):
        err_console.print(
            f"grace period of {grace:g} s over: exiting with runs in flight "
            "(their transactions roll back; nothing is lost)"
        )
        sys.stderr.flush()
        os._exit(1)  # threads stuck in the database would hold a normal exit forever
    bus.close()
    err_console.print("stopped")


@app.command()
def bench(
    profile: Annotated[
        str, typer.Option("--profile", help="smoke, quick, full, drain-200k or drain-1m.")
    ] = "quick",
    db: DbOption = None,
    json_path: Annotated[str | None, typer.Option("--json", help="Write the figures here.")] = None,
    chart: Annotated[str | None, typer.Option("--chart", help="Write a PNG chart here.")] = None,
) -> None:
    """Measure throughput against raw SQL floors and peer queues (see docs/performance.md).

    On PostgreSQL, --db names a server: a scratch database is created and dropped."""
    from syncbus.bench import run_bench

    try:
        run_bench(profile, db or _state.db, json_path, console, chart)
    except SyncBusError as exc:
        raise _fail(exc) from exc


@app.command()
def demo(db: DbOption = None) -> None:
    """Log the sample CRM data set through its connector, process it, and show the result."""
    from syncbus.examples.crm.demo import run_demo

    url = db or _state.db or "sqlite:///syncbus.db"
    console.print(f"[bold]syncbus demo[/] on {url}")
    try:
        with IntegrationBus(url) as bus:
            run_demo(bus, console)
    except SyncBusError as exc:
        raise _fail(exc) from exc


def main() -> None:
    app()


if __name__ == "__main__":
    main()
