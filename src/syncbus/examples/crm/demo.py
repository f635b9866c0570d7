"""The end-to-end sample run behind ``syncbus demo``: log the CRM's tasks, apply them, report.

Re-runnable on the same database: the idempotency keys make a second run log nothing new, and
the task still waiting (the article whose folder never arrives, a SkipOnError task) is tried
again once its back-off has passed (10 s, doubling after each failed attempt).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from syncbus import IntegrationBus, ProcessResult, SyncBusError
from syncbus.examples.crm.connector import CrmConnector, CrmEntityConnector
from syncbus.examples.crm.feed import CrmTask, crm_tasks, new_hire_tasks

CONNECTOR = CrmConnector.connector_name or "CrmConnector"

# The object types the CRM feeds, counted in the "Content repository" table.
_OBJECT_TYPES = (
    "cms.user",
    "cms.role",
    "cms.userrole",
    "community.group",
    "forums.forum",
    "forums.forumpost",
)


@dataclass(frozen=True)
class DemoReport:
    """What one run of the demo did."""

    logged: int  # tasks newly queued by this run
    rejected: int  # tasks the bus refused to log (a SyncBusError at log time)
    applied: int  # tasks applied by this run's processing
    failed: int  # tasks that failed during this run's processing (whatever their process type)
    remaining: int  # tasks still queued afterwards (waiting or failed)


@dataclass(frozen=True)
class Rejection:
    """A task the bus refused to log, and why."""

    task: CrmTask
    error: str


def run_demo(bus: IntegrationBus, console: Console) -> DemoReport:
    """Send the sample CRM's tasks through ``bus``, apply them and print what happened."""
    bus.create_schema()
    connector = CrmConnector()
    if bus.get_object("cms.site", connector.site_name) is None:
        bus.create_site(connector.site_name)  # a fresh database already has site "main"
    bus.register_connector(connector)
    tasks = crm_tasks(connector.data)

    console.rule(f"[bold]{connector.display_name}[/]: {len(tasks)} tasks from the CRM")
    logged, rejections = _log_tasks(bus, tasks, console)
    result = _apply_tasks(bus, console)
    waiting = bus.list_tasks(CONNECTOR)

    pages = crm_pages(bus, connector)
    console.print(_content_table(bus, pages))
    console.print(_page_table(pages, connector.site_name))
    console.print(_user_table(bus))
    console.print(_waiting_table(bus))
    console.print(_event_table(bus))
    console.print(_rejected_table(rejections))
    report = DemoReport(
        logged=logged,
        rejected=len(rejections),
        applied=result.applied,
        failed=result.failed,
        remaining=len(waiting),
    )
    console.print(
        f"logged {report.logged}, rejected at log time {report.rejected}, "
        f"applied {report.applied}, failed {report.failed}, still queued {report.remaining}"
    )
    return report


@contextmanager
def _progress(console: Console) -> Iterator[Progress]:
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        yield progress


def _log_tasks(
    bus: IntegrationBus, tasks: list[CrmTask], console: Console
) -> tuple[int, list[Rejection]]:
    """Log every task; count the new ones and collect the ones the bus refused."""
    queued_before = {t.task_id for t in bus.list_tasks(CONNECTOR)}
    seen: set[int] = set()
    rejections: list[Rejection] = []
    logged = 0
    with _progress(console) as progress:
        bar = progress.add_task("Logging CRM tasks", total=len(tasks))
        for task in tasks:
            try:
                task_id = _log_one(bus, CONNECTOR, task)
            except SyncBusError as exc:
                rejections.append(Rejection(task, f"{type(exc).__name__}: {exc}"))
            else:
                # A repeated idempotency key returns the first task's id: either a task still
                # queued from an earlier run, or one already applied (and so no longer queued).
                if task_id is not None and task_id not in queued_before | seen:
                    seen.add(task_id)
                    if bus.get_task(task_id) is not None:
                        logged += 1
            progress.advance(bar)
    return logged, rejections


def _apply_tasks(bus: IntegrationBus, console: Console) -> ProcessResult:
    """Process the connector's queue with a progress bar fed by the bus's progress callback."""
    total = len(bus.list_tasks(CONNECTOR))
    with _progress(console) as progress:
        bar = progress.add_task("Applying tasks", total=total)

        def on_progress(result: ProcessResult) -> None:
            # Counts are cumulative; tasks deleted on error are among the failed ones.
            done = result.applied + result.failed + result.skipped
            progress.update(bar, completed=min(done, total))

        results = bus.process_tasks(CONNECTOR, on_progress=on_progress)
        result = results.get(CONNECTOR) or ProcessResult(CONNECTOR)
        on_progress(result)
    if result.not_run_reason:
        console.print(f"[yellow]Tasks were not processed: {result.not_run_reason}[/]")
    elif result.stopped:
        console.print(f"[red]Processing stopped at a failed DEFAULT task:[/] {result.error}")
    return result


def _content_table(bus: IntegrationBus, pages: list[dict[str, Any]]) -> Table:
    table = Table(title="Content repository")
    table.add_column("object type / page type")
    table.add_column("count", justify="right")
    for object_type in _OBJECT_TYPES:
        table.add_row(object_type, str(len(bus.find_objects(object_type))))
    classes = sorted({str(p["node_class_name"]) for p in pages})
    for class_name in classes:
        count = sum(1 for p in pages if p["node_class_name"] == class_name)
        table.add_row(f"pages: {class_name}", str(count))
    return table


def _find_page(
    bus: IntegrationBus, site: str, rec: dict[str, Any], parents: list[str]
) -> dict[str, Any] | None:
    """Where the page of a CRM record is now: under one of ``parents`` (it may have moved)."""
    for parent in parents:
        page = bus.get_page(site, f"{parent.rstrip('/')}/{rec['alias']}")
        if page is not None and str(page["node_guid"]) == rec["node_guid"]:
            return page
    return None


def crm_pages(bus: IntegrationBus, connector: CrmConnector) -> list[dict[str, Any]]:
    """The CRM's folders and articles found in the repository, wherever they are now.

    The contract reads pages by alias path, so look for each folder under the root and for
    each article under the root and every folder found (an article may have been moved).
    """
    site = connector.site_name
    folders = [p for r in connector.data["folders"] if (p := _find_page(bus, site, r, ["/"]))]
    parents = ["/", *(str(p["node_alias_path"]) for p in folders)]
    articles = [p for r in connector.data["articles"] if (p := _find_page(bus, site, r, parents))]
    return sorted(folders + articles, key=lambda p: str(p["node_alias_path"]))


def _page_table(pages: list[dict[str, Any]], site: str) -> Table:
    table = Table(title=f"Pages of site {site!r}")
    for column in ("alias path", "class", "name", "published"):
        table.add_column(column)
    for page in pages:
        table.add_row(
            str(page["node_alias_path"]),
            str(page["node_class_name"]),
            str(page["document_name"]),
            "yes" if page.get("published") else "no",
        )
    return table


def _user_table(bus: IntegrationBus) -> Table:
    users = sorted(bus.find_objects("cms.user"), key=lambda u: str(u["user_name"]))
    table = Table(title=f"Users (first 6 of {len(users)})")
    for column in ("user name", "email", "name", "roles"):
        table.add_column(column)
    for user in users[:6]:
        roles = len(bus.find_objects("cms.userrole", user_id=user["user_id"]))
        name = f"{user['first_name']} {user['last_name']}"
        table.add_row(str(user["user_name"]), str(user["email"]), name, str(roles))
    return table


def _waiting_table(bus: IntegrationBus) -> Table:
    table = Table(title="Failed or waiting tasks")
    _add_columns(table, "id", "title", "process type", "attempts", "next try", "error")
    now = bus.runner.clock()
    for info in bus.list_tasks(CONNECTOR):
        table.add_row(
            str(info.task_id),
            info.title,
            info.process_type.value,
            str(info.attempts),
            _next_try(info.next_attempt_at, now),
            info.error_message or "",
        )
    return table


def _next_try(at: dt.datetime | None, now: dt.datetime) -> str:
    if at is None:
        return ""
    seconds = (at - now).total_seconds()
    return "now" if seconds <= 0 else f"in {seconds:.0f} s"


def _event_table(bus: IntegrationBus) -> Table:
    table = Table(title="Event log")
    _add_columns(table, "time", "code", "message")
    for entry in bus.event_log():
        table.add_row(entry.time.strftime("%Y-%m-%d %H:%M:%S"), entry.code, entry.message)
    return table


def _rejected_table(rejections: list[Rejection]) -> Table:
    table = Table(title="Rejected at log time")
    _add_columns(table, "task", "idempotency key", "error")
    for rejection in rejections:
        table.add_row(rejection.task.label, rejection.task.idempotency_key, rejection.error)
    return table


def _add_columns(table: Table, *names: str) -> None:
    """Columns for a table whose last column holds long messages: fold them, never cut them."""
    for name in names[:-1]:
        table.add_column(name, overflow="fold")
    table.add_column(names[-1], overflow="fold", ratio=3)


ENTITY_CONNECTOR = CrmEntityConnector.connector_name or "CrmEntityConnector"


@dataclass(frozen=True)
class EntityDemoReport:
    """What one run of the demo's ENTITY part did."""

    waited_for: tuple[str, ...]  # what each early membership waited for (empty on a re-run)
    applied: int  # tasks applied by this run's two processings
    remaining: int  # tasks of the ENTITY connector still queued afterwards


def run_entity_demo(bus: IntegrationBus, console: Console) -> EntityDemoReport:
    """The same CRM, registered a second time as an ``Ordering.ENTITY`` connector, sends a new
    hire's membership before the user it names: the membership waits, then applies once the
    user arrives. Run after :func:`run_demo`, whose roles the membership names.

    Under ``CrmConnector`` (one strict queue) the same order would fail the membership with
    ``Cannot translate columns`` and stop every task behind it.
    """
    connector = CrmEntityConnector()
    bus.register_connector(connector)
    tasks = new_hire_tasks(connector.data)
    early = [t for t in tasks if t.obj["kind"] == "membership"]
    late = [t for t in tasks if t.obj["kind"] != "membership"]
    console.rule(
        f"[bold]{connector.display_name}[/]: {ENTITY_CONNECTOR}, ordering = Ordering.ENTITY"
    )
    console.print(
        "The CRM sends a new hire's membership [bold]before[/] the user it names "
        "(under CrmConnector's one strict queue it would fail and stop everything behind it)."
    )

    first_ids = _log_entity_tasks(bus, early)
    first = _run_entity(bus)
    waited: list[str] = []
    for task, task_id in zip(early, first_ids, strict=True):
        info = bus.get_task(task_id) if task_id is not None else None
        if info is None:
            console.print(f"1. {task.label}: applied by an earlier run of the demo, nothing waits")
            continue
        if info.waiting_for:
            waited.append(info.waiting_for)
            quiet = "" if bus.task_log(info.task_id) else " (no error logged)"
            state = f"[yellow]WAITS[/] for {info.waiting_for}{quiet}"
        else:
            state = f"is queued: {info.error_message or 'not run yet'}"
        console.print(f"1. {task.label} (task {info.task_id}) {state}")
        console.print(f"   lane {info.lane}", overflow="fold")

    _log_entity_tasks(bus, late)
    second = _run_entity(bus)
    remaining = bus.list_tasks(ENTITY_CONNECTOR)
    woke = " (the user, then the waiting membership)" if waited else ""
    console.print(f"2. {', '.join(t.label for t in late)} sent: applied {second.applied}{woke}")
    for task in early:
        console.print(f"   {_membership_state(bus, connector, task)}")
    console.print(f"{ENTITY_CONNECTOR}: waited {len(waited)}, still queued {len(remaining)}")
    return EntityDemoReport(
        waited_for=tuple(waited),
        applied=first.applied + second.applied,
        remaining=len(remaining),
    )


def _log_entity_tasks(bus: IntegrationBus, tasks: list[CrmTask]) -> list[int | None]:
    return [_log_one(bus, ENTITY_CONNECTOR, task) for task in tasks]


def _log_one(bus: IntegrationBus, connector: str, task: CrmTask) -> int | None:
    """Log one CRM task through ``connector``, as the feed describes it."""
    return bus.process_external_task(
        connector,
        task.obj,
        process_type=task.process_type,
        task_type=task.task_type,
        data_type=task.data_type,
        site_name=task.site_name,
        idempotency_key=task.idempotency_key,
    )


def _run_entity(bus: IntegrationBus) -> ProcessResult:
    results = bus.process_tasks(ENTITY_CONNECTOR)
    return results.get(ENTITY_CONNECTOR) or ProcessResult(ENTITY_CONNECTOR)


def _membership_state(bus: IntegrationBus, connector: CrmConnector, task: CrmTask) -> str:
    """Whether a membership's user now has its role, read from the repository."""
    user = connector.get_internal_object_params(task.obj["user_id"], "cms.user")
    role = connector.get_internal_object_params(task.obj["role_id"], "cms.role")
    assert user is not None and role is not None  # the feed's own data: both are known
    found_user = bus.get_object("cms.user", user.code_name)
    found_role = bus.get_object("cms.role", role.code_name, site_name=role.site_name)
    has = bool(
        found_user
        and found_role
        and bus.find_objects(
            "cms.userrole", user_id=found_user["user_id"], role_id=found_role["role_id"]
        )
    )
    verdict = "[green]yes[/]" if has else "[red]no[/]"
    return f"{user.code_name} has role {role.code_name}: {verdict}"
