"""How the command line shows history (CONTRACT §10): a task's record, an object's records, and
reading a replacement object for edit and replay.

Text that comes from users or connectors is printed as ``Text``, never read as Rich markup.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from syncbus.cli_errors import EXIT_ERROR, report
from syncbus.enums import TaskDataType
from syncbus.model import TaskRecord

_FULL: dict[str, Any] = {"overflow": "fold"}
_STATE_STYLE = {
    "applied": "green",
    "failed": "red",
    "dropped": "red",
    "waiting": "yellow",
    "deleted": "yellow",
}


def usage_error(message: str) -> typer.Exit:
    """Report a bad argument on one line of stderr; raise the result (exit status 2)."""
    report(message)
    return typer.Exit(EXIT_ERROR)


def parse_object(spec: str, option: str = "--object ") -> tuple[str, str]:
    """``cms.user/alice`` -> ``("cms.user", "alice")``; the code name may hold more slashes.
    ``option``: how the command names the argument in its error."""
    object_type, _, code_name = spec.partition("/")
    if not object_type.strip() or not code_name:
        raise usage_error(
            f"{option}{spec!r}: give the object type and the code name (or GUID) as "
            f"TYPE/CODE_NAME, e.g. {option}cms.user/alice"
        )
    return object_type.strip(), code_name


def read_object(path: str) -> Any:
    """The JSON in ``path`` (``-``: standard input), or a one-line error (exit status 2)."""
    where = "standard input" if path == "-" else path
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise usage_error(f"cannot read {where}: {exc}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise usage_error(f"{where} is not JSON: {exc}") from exc


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def state_text(record: TaskRecord) -> Text:
    return Text(record.state, style=_STATE_STYLE.get(record.state, ""))


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def changed_columns(record: TaskRecord) -> Text:
    if record.into_task_id is not None:
        return Text(f"carried by task {record.into_task_id}")
    if record.changes is None:
        return Text("")
    text = ", ".join(record.changes) if record.changes else "(nothing changed)"
    if record.carried_task_ids:
        text += f" (with {len(record.carried_task_ids)} coalesced into it)"
    return Text(text)


def _task_list(ids: tuple[int, ...], shown: int = 20) -> str:
    text = ", ".join(str(i) for i in ids[:shown])
    if len(ids) > shown:
        text += f" and {len(ids) - shown} more"
    return ("task " if len(ids) == 1 else "tasks ") + text


def record_view(record: TaskRecord) -> RenderableType:
    """A finished task's record: outcome, what it changed, its translations and errors, and
    the external and internal objects."""
    what = record.object_type or record.class_name or ""
    if record.code_name is not None:
        what += f" {record.code_name!r}"
    head = Text.assemble(
        (f"task {record.task_id} ", "bold"),
        state_text(record),
        f" {_when(record.finished_at)} (logged {_when(record.logged_at)})",
    )
    about = Text(
        f"{record.connector_name} · {record.task_type.value} · {what} · site "
        f"{record.site_name or '-'} · process type {record.process_type.value}"
        + (f" (when {record.state})" if record.finished else "")
        + (f" · lane {record.lane}" if record.lane else "")
    )
    parts: list[RenderableType] = [head, about, Text.assemble(("title ", "bold"), record.title)]
    if record.idempotency_key is not None:
        parts.append(Text.assemble(("idempotency key ", "bold"), record.idempotency_key))
    if record.into_task_id is not None:
        parts.append(Text(f"coalesced: its values were applied by task {record.into_task_id}"))
    if record.carried_task_ids:
        parts.append(
            Text(
                f"carried the values of {_task_list(record.carried_task_ids)} "
                "(coalesced into it): changes lists what they and it changed together"
            )
        )
    if record.changes is not None and not record.changes and not record.changes_recorded:
        parts.append(
            Text(
                f"changes: not recorded for {record.task_type.value} tasks (a page's changes "
                "are listed for creates and updates)"
            )
        )
    elif record.changes is not None:
        parts.append(_changes_table(record.changes))
    if record.data_type is TaskDataType.SNAPSHOT and (record.internal or {}).get("children"):
        parts.append(Text("its child objects were written too; changes lists its own object's"))
    if record.translations:
        parts.append(_translations_table(record.translations))
    if record.errors:
        parts.append(Text("error history", style="bold"))
        parts.extend(Text(f"{_when(e.time)}  {e.error_message}") for e in record.errors)
    parts.append(Text("external object", style="bold"))
    parts.append(Text(json.dumps(record.external, indent=2, ensure_ascii=False, default=str)))
    parts.append(Text("internal object", style="bold"))
    parts.append(Text(json.dumps(record.internal, indent=2, ensure_ascii=False, default=str)))
    return Group(*parts)


def _changes_table(changes: dict[str, list[Any]]) -> RenderableType:
    if not changes:
        return Text("changes: none (the task changed nothing)")
    table = Table(title="changes", title_justify="left")
    for col in ("column", "old", "new"):
        table.add_column(col, **_FULL)
    for column, (old, new) in changes.items():
        table.add_row(Text(column), Text(_value(old)), Text(_value(new)))
    return table


def _translations_table(translations: list[dict[str, Any]]) -> Table:
    table = Table(title="translations", title_justify="left")
    for col in ("column", "external id", "looked for", "resolved to"):
        table.add_column(col, **_FULL)
    for t in translations:
        table.add_row(
            Text(str(t.get("column") or "")),
            Text(_value(t.get("external_id"))),
            Text(_value(t.get("identity"))),
            Text("" if t.get("internal_id") is None else _value(t["internal_id"])),
        )
    return table


def history_table(title: str, records: list[TaskRecord]) -> Table:
    """An object's records, newest first."""
    table = Table(title=Text(title))
    for col in ("id", "state", "finished", "connector", "title", "changed"):
        table.add_column(col, **_FULL)
    for r in records:
        table.add_row(
            str(r.task_id),
            state_text(r),
            _when(r.finished_at),
            Text(r.connector_name),
            Text(r.title),
            changed_columns(r),
        )
    return table


def print_records_json(records: list[TaskRecord], *, one: bool = False) -> None:
    """The records as the HTTP API serialises them (``TaskRecordOut``), plain on stdout."""
    # Imported here: the service pulls in FastAPI, which the other commands do not need.
    from pydantic import TypeAdapter

    from syncbus.service.schemas import TaskRecordOut

    out = [TaskRecordOut.of(r) for r in records]
    value: Any = out[0] if one else out
    adapter: TypeAdapter[Any] = TypeAdapter(TaskRecordOut if one else list[TaskRecordOut])
    typer.echo(adapter.dump_json(value, indent=2).decode())


def print_view(console: Console, record: TaskRecord) -> None:
    console.print(record_view(record), soft_wrap=True)
