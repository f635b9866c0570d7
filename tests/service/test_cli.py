"""The ``syncbus`` command line, driven through Typer's runner against real databases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from syncbus import IntegrationBus, ProcessType
from syncbus.cli import app
from tests.seq import make_bus

runner = CliRunner()


def invoke(db_url: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--db", db_url, *args])
    return result.exit_code, result.output


@pytest.fixture
def seq_bus(db_url: str) -> IntegrationBus:
    bus = make_bus(db_url)
    yield bus
    bus.close()


def test_db_upgrade_is_idempotent(db_url: str) -> None:
    code, out = invoke(db_url, "db", "upgrade")
    assert code == 0 and ("upgraded" in out or "up to date" in out)
    code, out = invoke(db_url, "db", "upgrade")
    assert code == 0 and "up to date" in out


def test_tasks_list_show_process(db_url: str, seq_bus: IntegrationBus) -> None:
    tid = seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    code, out = invoke(db_url, "tasks", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [t["task_id"] for t in listed] == [tid]
    assert listed[0]["connector_name"] == "Seq"
    code, out = invoke(db_url, "tasks", "show", str(tid))
    assert code == 0 and '"counter_name": "a"' in out
    code, out = invoke(db_url, "process", "--connector", "Seq")
    assert code == 0 and "done" in out
    assert seq_bus.list_tasks() == []
    assert seq_bus.get_object("seq.counter", "a")["n"] == 1


def test_process_reports_a_stopped_connector(db_url: str, seq_bus: IntegrationBus) -> None:
    seq_bus.process_external_task("Seq", {"key": "a", "n": 1}, process_type=ProcessType.ERROR)
    code, out = invoke(db_url, "process")
    assert code == 2 and "stopped" in out


def test_tasks_sync_and_delete(db_url: str, seq_bus: IntegrationBus) -> None:
    first = seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    second = seq_bus.process_external_task("Seq", {"key": "b", "n": 2})
    code, out = invoke(db_url, "tasks", "sync", str(second))
    assert code == 0 and "applied" in out
    code, _ = invoke(db_url, "tasks", "delete", str(first))
    assert code == 0
    assert seq_bus.list_tasks() == []
    assert seq_bus.get_object("seq.counter", "a") is None
    code, out = invoke(db_url, "tasks", "delete", str(first))
    assert code == 2 and f"no queued task with id {first}" in out


def test_connectors_add_list_disable_enable(db_url: str, seq_bus: IntegrationBus) -> None:
    code, out = invoke(db_url, "connectors", "add", "tests.seq:SeqConnector")
    assert code == 0 and "'Seq' registered" in out
    code, _ = invoke(db_url, "connectors", "disable", "Seq")
    assert code == 0
    assert not next(c for c in seq_bus.list_connectors() if c.name == "Seq").enabled
    code, out = invoke(db_url, "connectors", "list")
    assert code == 0 and "Seq" in out
    assert "limit" in out and "4321" not in out
    seq_bus.set_queue_limit("Seq", 4321)  # the docs say the table shows it
    code, out = invoke(db_url, "connectors", "list")
    assert code == 0 and "4321" in out
    code, _ = invoke(db_url, "connectors", "enable", "Seq")
    assert code == 0
    assert next(c for c in seq_bus.list_connectors() if c.name == "Seq").enabled


def test_connectors_add_bad_path_is_a_clear_error(db_url: str) -> None:
    code, out = invoke(db_url, "connectors", "add", "no_such_module:Nope")
    assert code == 2
    assert "no_such_module:Nope" in out and "cannot import" in out
    code, out = invoke(db_url, "connectors", "enable", "Ghost")
    assert code == 2 and "Ghost" in out


def test_bad_database_url_is_a_clear_error() -> None:
    result = runner.invoke(app, ["--db", "mysql://x@y/z", "tasks", "list"])
    assert result.exit_code == 2
    assert "unsupported database 'mysql'" in str(result.exception) + result.output


@pytest.mark.multiprocess
def test_serve_answers_and_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    from tests.http_server import spawn_listening

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    serve = [sys.executable, "-m", "syncbus.cli", "serve", "--db", url]
    proc, base = spawn_listening(
        lambda port: [*serve, "--port", str(port)], env={**os.environ, "SYNCBUS_API_TOKEN": "t"}
    )
    try:
        health = httpx.get(f"{base}/healthz")
        assert health.json()["status"] == "ok"
        assert httpx.get(f"{base}/api/tasks").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Application shutdown complete" in out


def test_a_piped_table_keeps_each_row_on_one_line(db_url: str, seq_bus: IntegrationBus) -> None:
    """Piped into grep, `tasks list` must not wrap a row at 80 columns (Rich's default width
    when its output is not a terminal)."""
    key = "k" * 120
    seq_bus.process_external_task("Seq", {"key": key, "n": 1})
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    out = subprocess.run(
        [sys.executable, "-m", "syncbus.cli", "--db", db_url, "tasks", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if key in line]
    assert len(rows) == 1 and "Seq" in rows[0], out.stdout
