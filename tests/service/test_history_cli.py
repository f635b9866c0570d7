"""History on the command line (CONTRACT §10), on SQLite and PostgreSQL: ``tasks show`` for
finished tasks, ``tasks history --object``, ``tasks replace`` (edit and replay)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result

from syncbus import IntegrationBus, TaskType
from syncbus.cli import app
from syncbus.service import create_app
from tests.helpers import corrupt
from tests.http_server import asgi_client
from tests.seq import SeqConnector, make_bus

runner = CliRunner()
# Wide enough that no table cell folds: the tests look for whole strings.
ENV: dict[str, str | None] = {"COLUMNS": "400", "SYNCBUS_DATABASE_URL": None}
UPDATE = TaskType.UPDATE_OBJECT


@pytest.fixture
def seq_bus(db_url: str) -> Iterator[IntegrationBus]:
    bus = make_bus(db_url)
    yield bus
    bus.close()


def cli(db_url: str, *args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, ["--db", db_url, *args], env=ENV, input=stdin)


def one_line_error(result: Result) -> str:
    """What a failed command printed: exit status 2, exactly one line on stderr, nothing else."""
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def from_api(bus: IntegrationBus, path: str) -> Any:
    with asgi_client(create_app(bus, api_token="t", run_dispatcher=False)) as api:
        response = api.get(path, headers={"Authorization": "Bearer t"})
    assert response.status_code == 200, response.text
    return response.json()


def from_admin(bus: IntegrationBus, path: str) -> str:
    """An admin page's HTML, signed in as an operator."""
    from tests.admin import TOKEN, sign_in

    with asgi_client(create_app(bus, api_token=TOKEN, run_dispatcher=False)) as client:
        assert sign_in(client).status_code == 303
        response = client.get(path)
    assert response.status_code == 200, response.text
    return response.text


def task_row(bus: IntegrationBus, task_id: int) -> dict[str, Any]:
    with bus.engine.connect() as c:
        rows = c.execute(sa.text("SELECT * FROM syncbus_task WHERE task_id = :t"), {"t": task_id})
        return dict(rows.mappings().one())


def failed_task(bus: IntegrationBus) -> int:
    """A task of counter a that failed: its stored data is unreadable."""
    task_id = bus.process_external_task("Seq", {"key": "a", "n": 1})
    corrupt(bus, task_id)
    bus.process_tasks("Seq")
    assert bus.get_task(task_id) is not None and bus.get_task(task_id).error_message  # type: ignore[union-attr]
    return task_id


# -- tasks show --------------------------------------------------------------------------------
def test_show_a_finished_task(db_url: str, seq_bus: IntegrationBus) -> None:
    seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    update = seq_bus.process_external_task(
        "Seq", {"key": "a", "n": 2}, task_type=UPDATE, idempotency_key="order-7"
    )
    seq_bus.process_tasks("Seq")
    result = cli(db_url, "tasks", "show", str(update))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"task {update} applied" in out and "(logged " in out
    assert "idempotency key order-7" in out
    assert "Seq · UpdateObject · seq.counter 'a'" in out
    assert "changes" in out and "│ n      │ 1   │ 2   │" in out
    assert '"n": 2' in out  # the external object
    assert "error history" not in out
    # The process type it had when it left the queue, said as such (an operator read "process
    # type Error" on a task synchronized out of Error as if it still were).
    assert "process type Default (when applied)" in out


def test_show_json_is_the_api_record(db_url: str, seq_bus: IntegrationBus) -> None:
    applied = seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    seq_bus.process_tasks("Seq")
    queued = seq_bus.process_external_task("Seq", {"key": "b", "n": 1})
    for task_id in (applied, queued):
        result = cli(db_url, "tasks", "show", str(task_id), "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == from_api(seq_bus, f"/api/tasks/{task_id}/history")
    assert json.loads(cli(db_url, "tasks", "show", str(applied), "--json").stdout)["state"] == (
        "applied"
    )


def test_show_a_queued_task_keeps_the_task_json_and_adds_its_state(
    db_url: str, seq_bus: IntegrationBus
) -> None:
    task_id = failed_task(seq_bus)
    out = cli(db_url, "tasks", "show", str(task_id)).stdout
    shown, end = json.JSONDecoder().raw_decode(out)
    assert shown == from_api(seq_bus, f"/api/tasks/{task_id}")
    assert out[end:].lstrip().startswith("state failed")
    assert "error history" in out


def test_show_an_unknown_or_pruned_task_is_one_line(db_url: str, seq_bus: IntegrationBus) -> None:
    line = one_line_error(cli(db_url, "tasks", "show", "999999"))
    assert line.startswith("error: no task with id 999999: not queued, and no record of it")
    task_id = seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    seq_bus.process_tasks("Seq")
    assert cli(db_url, "tasks", "show", str(task_id)).exit_code == 0
    seq_bus.settings.history_retention_days = 0
    seq_bus.prune()
    line = one_line_error(cli(db_url, "tasks", "show", str(task_id)))
    assert "more than 0 days ago" in line


# -- tasks history -----------------------------------------------------------------------------
def test_history_lists_the_object_s_tasks_newest_first(
    db_url: str, seq_bus: IntegrationBus
) -> None:
    first = seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    second = seq_bus.process_external_task("Seq", {"key": "a", "n": 2}, task_type=UPDATE)
    seq_bus.process_external_task("Seq", {"key": "other", "n": 1})
    seq_bus.process_tasks("Seq")
    result = cli(db_url, "tasks", "history", "--object", "seq.counter/a")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "History of seq.counter 'a' (2)" in out
    assert out.index(f"│ {second} ") < out.index(f"│ {first} ")
    assert "Update seq.counter 'a'" in out and "other" not in out
    row = next(line for line in out.splitlines() if line.startswith(f"│ {second} "))
    assert "applied" in row and row.rstrip(" │").endswith("n")  # the changed column

    listed = json.loads(
        cli(db_url, "tasks", "history", "--object", "seq.counter/a", "--json").stdout
    )
    assert listed == from_api(seq_bus, "/api/objects/seq.counter/a/history")["records"]
    assert [r["task_id"] for r in listed] == [second, first]
    one = cli(db_url, "tasks", "history", "--object", "seq.counter/a", "--limit", "1", "--json")
    assert [r["task_id"] for r in json.loads(one.stdout)] == [second]
    none = cli(db_url, "tasks", "history", "--object", "seq.counter/zzz")
    assert none.exit_code == 0 and "History of seq.counter 'zzz' (0)" in none.stdout


class SeqCoalescing(SeqConnector):
    connector_name = "SeqC"
    coalesce = True


def test_history_and_show_of_a_coalesced_task_name_its_carrier(
    db_url: str, seq_bus: IntegrationBus
) -> None:
    seq_bus.register_connector(SeqCoalescing)
    absorbed = seq_bus.process_external_task("SeqC", {"key": "c", "n": 1})
    carrier = seq_bus.process_external_task("SeqC", {"key": "c", "n": 2})
    assert seq_bus.process_tasks("SeqC")["SeqC"].coalesced == 1
    out = cli(db_url, "tasks", "history", "--object", "seq.counter/c").stdout
    row = next(line for line in out.splitlines() if line.startswith(f"│ {absorbed} "))
    assert "coalesced" in row and f"carried by task {carrier}" in row
    shown = cli(db_url, "tasks", "show", str(absorbed)).stdout
    assert f"task {absorbed} coalesced" in shown
    assert f"coalesced: its values were applied by task {carrier}" in shown
    row = next(line for line in out.splitlines() if line.startswith(f"│ {carrier} "))
    assert "(with 1 coalesced into it)" in row
    shown = cli(db_url, "tasks", "show", str(carrier)).stdout
    assert f"carried the values of task {absorbed} (coalesced into it)" in shown


def test_history_by_site_and_code_names_with_slashes(db_url: str, seq_bus: IntegrationBus) -> None:
    task_id = seq_bus.process_external_task("Seq", {"key": "dept/a", "n": 1})
    seq_bus.process_tasks("Seq")
    args = ("tasks", "history", "--object", "seq.counter/dept/a", "--json")
    assert [r["task_id"] for r in json.loads(cli(db_url, *args).stdout)] == [task_id]
    on_site = cli(db_url, *args, "--site", "main")
    assert on_site.exit_code == 0 and "on main" not in on_site.stdout  # JSON only
    # seq.counter is not bound to a site: its records stand for every site.
    assert [r["task_id"] for r in json.loads(on_site.stdout)] == [task_id]


def test_history_prints_markup_literally(db_url: str, seq_bus: IntegrationBus) -> None:
    task_id = seq_bus.process_external_task("Seq", {"key": "[bold]b[/x]", "n": 1})
    seq_bus.process_tasks("Seq")
    result = cli(db_url, "tasks", "history", "--object", "seq.counter/[bold]b[/x]")
    assert result.exit_code == 0, result.output
    assert "History of seq.counter '[bold]b[/x]'" in result.stdout
    assert "Create seq.counter '[bold]b[/x]'" in result.stdout
    shown = cli(db_url, "tasks", "show", str(task_id))
    assert shown.exit_code == 0, shown.output
    assert "title Create seq.counter '[bold]b[/x]'" in shown.stdout
    assert '"[bold]b[/x]"' in shown.stdout  # in the changes and the objects


@pytest.mark.parametrize("spec", ["seq.counter", "seq.counter/", "/a", ""])
def test_history_of_a_malformed_object_is_a_usage_error(
    db_url: str, seq_bus: IntegrationBus, spec: str
) -> None:
    line = one_line_error(cli(db_url, "tasks", "history", "--object", spec))
    assert "TYPE/CODE_NAME, e.g. --object cms.user/alice" in line


def test_history_of_an_unknown_type_is_one_line(db_url: str, seq_bus: IntegrationBus) -> None:
    line = one_line_error(cli(db_url, "tasks", "history", "--object", "no.such/a"))
    assert "unknown object type 'no.such'" in line


# -- tasks replace -----------------------------------------------------------------------------
def test_replace_from_a_file_with_sync_fixes_a_failed_task(
    db_url: str, seq_bus: IntegrationBus, tmp_path: Path
) -> None:
    task_id = failed_task(seq_bus)
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps({"key": "a", "n": 5}))
    result = cli(db_url, "tasks", "replace", str(task_id), "--file", str(fixed), "--sync")
    assert result.exit_code == 0, result.output
    assert f"task {task_id} applied" in result.stdout
    assert seq_bus.get_object("seq.counter", "a")["n"] == 5  # type: ignore[index]
    record = seq_bus.task_history(task_id)
    assert record is not None and record.state == "applied"
    assert record.external == {"key": "a", "n": 5} and len(record.errors) == 1


@pytest.mark.parametrize("worker", ["applied it", "was applying it"])
def test_replace_with_sync_when_a_woken_worker_takes_the_task_first(
    db_url: str,
    seq_bus: IntegrationBus,
    monkeypatch: pytest.MonkeyPatch,
    worker: str,
) -> None:
    """A new user's trial (PostgreSQL, a service running): the replace wakes the workers,
    one took the task before ``--sync`` could, and the command said "error: ... being
    applied" or "no queued task" (exit 2) though the task was replaced and applied. Now it
    waits for that batch and reports the outcome."""
    from syncbus.errors import TaskBusyError

    task_id = failed_task(seq_bus)
    original = IntegrationBus.synchronize_task
    calls: list[int] = []

    def raced(self: IntegrationBus, tid: int) -> bool:
        calls.append(tid)
        if len(calls) == 1:
            if worker == "was applying it":
                raise TaskBusyError(f"task {tid} is being applied by a running batch")
            assert self.process_tasks("Seq")["Seq"].applied == 1  # the woken worker
        return original(self, tid)

    monkeypatch.setattr(IntegrationBus, "synchronize_task", raced)
    result = cli(
        db_url, "tasks", "replace", str(task_id), "-f", "-", "--sync", stdin='{"key": "a", "n": 9}'
    )
    assert result.exit_code == 0, result.output
    assert f"task {task_id}: object replaced" in result.stdout
    assert f"task {task_id} applied" in result.stdout
    assert seq_bus.get_object("seq.counter", "a")["n"] == 9  # type: ignore[index]
    if worker == "applied it":  # the task had left the queue: its record says how it went
        assert calls == [task_id] and "a worker applied it" in result.stdout
    else:  # the batch was waited for, then the task run
        assert calls == [task_id, task_id]


def test_replace_from_stdin_keeps_the_task_queued(db_url: str, seq_bus: IntegrationBus) -> None:
    task_id = failed_task(seq_bus)
    result = cli(db_url, "tasks", "replace", str(task_id), "-f", "-", stdin='{"key": "a", "n": 7}')
    assert result.exit_code == 0, result.output
    assert f"task {task_id}: object replaced" in result.stdout
    assert f"syncbus tasks sync {task_id}" in result.stdout
    assert [t.task_id for t in seq_bus.list_tasks()] == [task_id]
    record = seq_bus.task_history(task_id)
    assert record is not None and record.external == {"key": "a", "n": 7}
    assert record.internal["data"] == {"counter_name": "a", "n": 7}


@pytest.mark.parametrize(
    ("stdin", "reason"),
    [
        ("{not json", "standard input is not JSON"),
        ('{"key": "a", "n": "seven"}', "'n'"),  # the column refuses the value
        ('{"key": "a"}', "the connector could not prepare the object: KeyError"),
    ],
)
def test_a_bad_replacement_is_one_line_and_changes_nothing(
    db_url: str, seq_bus: IntegrationBus, stdin: str, reason: str
) -> None:
    task_id = failed_task(seq_bus)
    before = task_row(seq_bus, task_id)
    line = one_line_error(cli(db_url, "tasks", "replace", str(task_id), "-f", "-", stdin=stdin))
    assert reason in line
    assert task_row(seq_bus, task_id) == before


def test_replace_of_a_missing_file_or_a_finished_task_is_one_line(
    db_url: str, seq_bus: IntegrationBus, tmp_path: Path
) -> None:
    line = one_line_error(cli(db_url, "tasks", "replace", "1", "-f", str(tmp_path / "none")))
    assert line.startswith(f"error: cannot read {tmp_path / 'none'}")
    task_id = seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    seq_bus.process_tasks("Seq")
    line = one_line_error(
        cli(db_url, "tasks", "replace", str(task_id), "-f", "-", stdin='{"key": "a", "n": 2}')
    )
    assert f"no queued task with id {task_id}" in line
    assert seq_bus.get_object("seq.counter", "a")["n"] == 1  # type: ignore[index]


def test_an_action_on_a_finished_task_says_it_left_the_queue(
    db_url: str, seq_bus: IntegrationBus
) -> None:
    """A new operator's trial: `tasks delete` of an applied task said only "no queued task",
    where the HTTP API says it left the queue, when, and where its record is."""
    applied = seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    seq_bus.process_tasks("Seq")
    deleted = seq_bus.process_external_task("Seq", {"key": "b", "n": 1})
    seq_bus.delete_task(deleted)
    for task_id, state in ((applied, "applied"), (deleted, "deleted")):
        for args in (("delete",), ("sync",), ("replace", "-f", "-")):
            line = one_line_error(
                cli(db_url, "tasks", args[0], str(task_id), *args[1:], stdin='{"key": "c"}')
            )
            assert f"no queued task with id {task_id}: it left the queue ({state} at " in line
            assert f"what happened to it: `syncbus tasks show {task_id}`" in line
    line = one_line_error(cli(db_url, "tasks", "delete", "999999"))
    assert line == "error: no queued task with id 999999"
    assert seq_bus.get_object("seq.counter", "a")["n"] == 1  # type: ignore[index]


def test_process_and_db_prune_apply_the_retentions(db_url: str, seq_bus: IntegrationBus) -> None:
    """`syncbus process` from cron runs no worker, and workers were the only ones to prune:
    such a deployment kept every record and key for ever."""
    task_id = seq_bus.process_external_task("Seq", {"key": "a", "n": 1}, idempotency_key="a1")
    seq_bus.process_tasks("Seq")
    assert seq_bus.task_history(task_id) is not None
    result = cli(db_url, "process")
    assert result.exit_code == 0, result.output
    assert "pruned" not in result.stdout  # within the retentions: nothing goes, nothing said
    seq_bus.settings.history_retention_days = 0
    seq_bus.settings.idempotency_retention_days = 0
    result = cli(db_url, "process")
    assert result.exit_code == 0, result.output
    assert "pruned 1 task record and 1 idempotency key past their retention" in result.stdout
    assert seq_bus.task_history(task_id) is None
    again = seq_bus.process_external_task("Seq", {"key": "a", "n": 2}, idempotency_key="a1")
    assert again != task_id  # the key was forgotten: a new task
    result = cli(db_url, "db", "prune")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.strip() == "pruned 0 task records and 0 idempotency keys past their retention"
    )


def test_a_page_delete_says_its_changes_are_not_recorded(
    db_url: str, seq_bus: IntegrationBus
) -> None:
    """A new developer's trial: a delete that removed a page (and the pages below it) read
    "changes: none (the task changed nothing)"; page deletes, moves, publishes and archives
    record `{}`, which there does not mean nothing changed."""
    from syncbus import Page
    from tests.helpers import add_connector, log

    add_connector(seq_bus)
    page = Page("cms.folder", "News", node_guid="0b1e8a5c-2f7d-4a53-9a0e-5b6c7d8e9f10")
    created = log(seq_bus, page, TaskType.CREATE_DOCUMENT)
    seq_bus.process_tasks("TestConnector")
    deleted = log(seq_bus, page, TaskType.DELETE_DOCUMENT)
    seq_bus.process_tasks("TestConnector")
    assert seq_bus.task_history(deleted).state == "applied"  # type: ignore[union-attr]
    out = cli(db_url, "tasks", "show", str(deleted)).stdout
    assert "changes: not recorded for DeleteDocument tasks" in out
    assert "changed nothing" not in out
    out = cli(db_url, "tasks", "show", str(created)).stdout
    assert "changes" in out and "not recorded" not in out
    admin = from_admin(seq_bus, f"/admin/tasks/{deleted}")
    assert 'data-testid="changes-not-recorded"' in admin and "changed-nothing" not in admin
