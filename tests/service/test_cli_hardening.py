"""The command line under hostile text, broken databases, a wrong folder and a missing token
(issue 10: items 4, 13, 17, 20)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

from syncbus import IntegrationBus, Page, ProcessType, TaskType
from syncbus.cli import app
from syncbus.service import create_app
from syncbus.store import migrate
from tests.cli_connectors import EVIL_DISPLAY, BrokenInitConnector, MarkupConnector
from tests.conftest import PG_URL
from tests.helpers import ROOT, DictConnector, role
from tests.http_server import asgi_client, free_port, spawn_listening
from tests.seq import make_bus

runner = CliRunner()
# Wide enough that no table cell folds: the tests look for whole strings.
ENV: dict[str, str | None] = {"COLUMNS": "400", "SYNCBUS_DATABASE_URL": None}
# Rich markup that crashes a markup parser ([/x] closes nothing) or silently vanishes ([bold]).
EVIL_PATH = "/no[/x]/[link=mailto:e@e.invalid]y"
EVIL_NAME = "[bold]b"


def cli(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return runner.invoke(app, list(args), env={**ENV, **(env or {})})


def one_line_error(result: Result) -> str:
    """The whole of what a failed command printed: exactly one line on stderr, nothing else."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def evil_bus(db_url: str) -> Iterator[IntegrationBus]:
    """A queue holding one failed (skip-on-error) page task whose title and error quote
    markup, logged through a connector whose display name is markup."""
    bus = IntegrationBus(db_url)
    bus.create_schema()
    bus.register_connector(MarkupConnector)
    bus.process_external_task(
        "Markup",
        Page("cms.folder", EVIL_NAME, parent_path=EVIL_PATH),
        task_type=TaskType.CREATE_DOCUMENT,
        site_name="main",
        process_type=ProcessType.SKIP_ON_ERROR,
    )
    yield bus
    bus.close()


# -- item 4: markup is printed, never interpreted ----------------------------------------------


def test_process_prints_a_markup_error_literally(db_url: str, evil_bus: IntegrationBus) -> None:
    result = cli("--db", db_url, "process")
    assert result.exit_code == 0, result.output
    assert f"'{EVIL_PATH}'" in result.stdout  # the error, in the outcome column
    assert evil_bus.list_tasks()[0].error_message is not None


def test_tasks_list_and_show_print_markup_literally(db_url: str, evil_bus: IntegrationBus) -> None:
    evil_bus.process_tasks()
    task = evil_bus.list_tasks()[0]
    assert EVIL_PATH in task.title and task.error_message and EVIL_PATH in task.error_message
    result = cli("--db", db_url, "tasks", "list")
    assert result.exit_code == 0, result.output
    assert task.title in result.stdout and f"Failed: {task.error_message}" in result.stdout
    result = cli("--db", db_url, "tasks", "show", str(task.task_id))
    assert result.exit_code == 0, result.output
    assert f"Z  {task.error_message}" in result.stdout  # the error history line
    assert f'"parent_path": "{EVIL_PATH}"' in result.stdout


def test_connectors_list_prints_a_markup_display_name_literally(
    db_url: str, evil_bus: IntegrationBus
) -> None:
    result = cli("--db", db_url, "connectors", "list")
    assert result.exit_code == 0, result.output
    assert EVIL_DISPLAY in result.stdout


def test_errors_quoting_markup_are_printed_literally(db_url: str, evil_bus: IntegrationBus) -> None:
    line = one_line_error(cli("--db", db_url, "connectors", "enable", "[bold]Ghost[/x]"))
    assert "'[bold]Ghost[/x]'" in line


# -- item 17: one line and exit 2 for what is not a bug ----------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://syncbus@127.0.0.1:1/syncbus", "cannot connect to PostgreSQL at 127.0.0.1:1"),
        ("sqlite:///{tmp}/no/such/dir/x.db", "the directory {tmp}/no/such/dir does not exist"),
        ("sqlite:///{tmp}/text.db", "{tmp}/text.db is not a SQLite database"),
        ("mysql://user@host/db", "unsupported database 'mysql'"),
        ("postgres ql://", "cannot parse database URL"),
        ("postgresql://u@h:notaport/db", "cannot parse database URL"),
        ("sqlite+nosuchdriver:///x.db", "cannot use database URL"),
    ],
)
def test_database_errors_are_one_line_with_the_fix(tmp_path: Path, url: str, expected: str) -> None:
    (tmp_path / "text.db").write_text("not a database\n" * 100)
    line = one_line_error(cli("--db", url.format(tmp=tmp_path), "tasks", "list"))
    assert expected.format(tmp=tmp_path) in line
    assert "--db" in line and "SYNCBUS_DATABASE_URL" in line  # where the fix goes


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_one_line_with_the_fix() -> None:
    if not PG_URL:
        pytest.skip("SYNCBUS_TEST_POSTGRES_URL is not set")
    url = make_url(PG_URL).set(database="syncbus_no_such_db")
    line = one_line_error(cli("--db", url.render_as_string(hide_password=False), "process"))
    assert "database 'syncbus_no_such_db' does not exist" in line
    assert "createdb syncbus_no_such_db" in line


def test_a_database_error_in_a_real_process_is_one_line_without_traceback() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "syncbus.cli",
            "--db",
            "postgresql://x@127.0.0.1:1/x",
            "tasks",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "cannot connect" in proc.stderr


def test_an_unknown_connector_is_an_error(db_url: str) -> None:
    make_bus(db_url).close()
    line = one_line_error(cli("--db", db_url, "tasks", "list", "-c", "Nope"))
    assert line == "error: no connector named 'Nope'; see `syncbus connectors list`"
    line = one_line_error(cli("--db", db_url, "tasks", "list", "--json", "-c", "Nope"))
    assert "'Nope'" in line
    assert "'Nope'" in one_line_error(cli("--db", db_url, "process", "-c", "Nope"))


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "list"],
        ["tasks", "show", "1"],
        ["tasks", "sync", "1"],
        ["tasks", "delete", "1"],
        ["connectors", "list"],
        ["connectors", "add", "tests.seq:SeqConnector"],
        ["connectors", "enable", "Seq"],
        ["process"],
    ],
)
def test_commands_do_not_create_the_implicit_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_line_error(cli(*args))
    assert f"no database at ./syncbus.db ({tmp_path / 'syncbus.db'})" in line
    assert "--db" in line and "SYNCBUS_DATABASE_URL" in line and "syncbus db upgrade" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "list"],
        ["tasks", "show", "1"],
        ["tasks", "history", "--object", "cms.user/ada"],
        ["tasks", "sync", "1"],
        ["tasks", "delete", "1"],
        ["connectors", "list"],
        ["connectors", "enable", "Seq"],
    ],
)
def test_commands_on_what_a_database_holds_do_not_create_a_named_sqlite_file(
    tmp_path: Path, args: list[str]
) -> None:
    """A new operator's trial: `tasks list --db sqlite:///mistyped.db` made an empty database
    and printed an empty queue, exit status 0."""
    missing = tmp_path / "mistyped.db"
    line = one_line_error(cli("--db", f"sqlite:///{missing}", *args))
    assert f"no database at {missing} (a mistyped path?)" in line
    assert f"syncbus db upgrade --db sqlite:///{missing}" in line
    assert list(tmp_path.iterdir()) == []
    # What the message says to run creates it; then the command works.
    assert cli("--db", f"sqlite:///{missing}", "db", "upgrade").exit_code == 0
    assert cli("--db", f"sqlite:///{missing}", "tasks", "list").exit_code == 0


def test_db_upgrade_creates_the_implicit_database_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert f"creating a new SQLite database at {tmp_path / 'syncbus.db'}" in result.stderr
    head = migrate.head_revision()
    assert f"schema upgraded from revision (none: new database) to {head}" in result.stdout
    again = cli("db", "upgrade")
    assert f"schema is up to date (revision {head})" in again.stdout
    result = cli("tasks", "list")
    assert result.exit_code == 0 and "Incoming tasks (0)" in result.stdout
    assert result.stderr == ""  # an existing database is opened without comment


def test_an_explicit_url_is_created_by_the_commands_that_set_up_or_run(tmp_path: Path) -> None:
    """A fresh deployment may start with any of them (a worker before `serve`)."""
    url = f"sqlite:///{tmp_path / 'new.db'}"
    result = cli("--db", url, "connectors", "add", "tests.seq:SeqConnector")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new.db").exists()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert cli("--db", other, "process").exit_code == 0
    assert (tmp_path / "other.db").exists()


def test_connectors_list_shows_load_errors(db_url: str) -> None:
    with IntegrationBus(db_url) as bus:
        bus.create_schema()
        bus.register_connector(BrokenInitConnector)
    broken = {"SYNCBUS_TEST_BREAK_INIT": "1"}
    result = cli("--db", db_url, "connectors", "list", env=broken)
    assert result.exit_code == 0, result.output
    assert "load error: failed to load connector 'Broken'" in result.stdout
    assert "RuntimeError: crm credentials missing" in result.stdout
    listed = json.loads(cli("--db", db_url, "connectors", "list", "--json", env=broken).stdout)
    assert "crm credentials missing" in listed[0]["load_error"]
    listed = json.loads(cli("--db", db_url, "connectors", "list", "--json").stdout)
    assert listed[0]["load_error"] is None
    # Said to the operator who ran it, not left on the dashboard for good (a new user's
    # trial: a shell without the connector's PYTHONPATH became a lasting warning).
    with IntegrationBus(db_url) as bus:
        assert [e for e in bus.event_log() if e.code == "LOADCONNECTOR"] == []


# -- item 20: --json is the API's JSON ---------------------------------------------------------


def test_tasks_json_is_the_api_json(db_url: str) -> None:
    bus = make_bus(db_url)
    connector = DictConnector()
    bus.register_connector(connector)
    failed = bus.process_external_task(  # fails: the parent page does not exist
        "TestConnector",
        Page("cms.folder", "orphan", parent_path="/missing"),
        task_type=TaskType.CREATE_DOCUMENT,
        process_type=ProcessType.SKIP_ON_ERROR,
        site_name="main",
    )
    bus.process_tasks()
    bus.process_external_task("TestConnector", role("r"), site_name="main", idempotency_key="k1")
    bus.process_external_task("Seq", {"key": "a", "n": 1})
    auth = {"Authorization": "Bearer t"}

    def from_api(path: str) -> Any:
        with asgi_client(create_app(bus, api_token="t", run_dispatcher=False)) as api:
            response = api.get(path, headers=auth)
        assert response.status_code == 200, response.text
        return response.json()

    api_tasks = from_api("/api/tasks")["tasks"]
    assert len(api_tasks) == 3 and api_tasks[0]["last_run_at"] is not None
    assert api_tasks[1]["idempotency_key"] == "k1"
    result = cli("--db", db_url, "tasks", "list", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == api_tasks
    seq = cli("--db", db_url, "tasks", "list", "--json", "-c", "Seq").stdout
    assert json.loads(seq) == from_api("/api/tasks?connector=Seq")["tasks"]

    shown = cli("--db", db_url, "tasks", "show", str(failed)).stdout
    task, _ = json.JSONDecoder().raw_decode(shown)
    assert task == from_api(f"/api/tasks/{failed}")

    connectors = cli("--db", db_url, "connectors", "list", "--json").stdout
    assert json.loads(connectors) == from_api("/api/connectors")["connectors"]
    bus.close()


# -- item 13 (command line): serve needs a token or --no-auth ----------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SYNCBUS_API_TOKEN", "SYNCBUS_DATABASE_URL", "SYNCBUS_TEST_BREAK_INIT")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def _serve_command(db: Path, port: int, *args: str) -> list[str]:
    url = f"sqlite:///{db}"
    return [sys.executable, "-m", "syncbus.cli", "serve", "--db", url, "--port", str(port), *args]


@contextmanager
def serving(db: Path, *args: str, env: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """Run ``syncbus serve``; yields its base URL and (after the with block) its output."""
    proc, url = spawn_listening(lambda port: _serve_command(db, port, *args), env=env)
    output: list[str] = []
    try:
        yield url, output
    finally:
        proc.send_signal(signal.SIGTERM)
        output.append(proc.communicate(timeout=30)[0])
    assert proc.returncode == 0, output[0]


@pytest.mark.parametrize("token", [None, "", "  \t "])
@pytest.mark.multiprocess
def test_serve_refuses_to_start_without_a_token(tmp_path: Path, token: str | None) -> None:
    env = _env() if token is None else _env(SYNCBUS_API_TOKEN=token)
    proc = subprocess.run(
        _serve_command(tmp_path / "serve.db", free_port()),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "SYNCBUS_API_TOKEN" in proc.stderr and "--no-auth" in proc.stderr
    # A variable that is set, but blank, is named as such (a new user's trial read "no API
    # token" with the variable set).
    assert ("is blank" in proc.stderr) == bool(token is not None and token)
    assert not (tmp_path / "serve.db").exists()  # refused before touching the database


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--host", "999.1.1.1"], "cannot listen on '999.1.1.1'"),
        (["--host", "192.0.2.1"], "cannot listen on '192.0.2.1'"),  # no address of this machine
        # EINVAL: a link-local IPv6 address needs its interface
        (["--host", "fe80::1"], "needs its interface: fe80::1%eth0"),
        (["--port", "70000"], "--port"),
        (["--port", "0"], "--port"),
    ],
)
@pytest.mark.multiprocess
def test_serve_refuses_a_place_it_cannot_listen_on(
    tmp_path: Path, args: list[str], says: str
) -> None:
    """One line and status 2, before the database is created (a new user's trial got a
    traceback for --port 70000 and uvicorn's status 3 for a bad host, the database made)."""
    db = tmp_path / "serve.db"
    command = [sys.executable, "-m", "syncbus.cli", "serve", "--db", f"sqlite:///{db}"]
    proc = subprocess.run(
        [*command, "--no-auth", *args], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not db.exists()


def test_a_privileged_port_is_named_as_such() -> None:
    """Binding a port below 1024 without privileges fails with EACCES (this suite may run as
    root, where it does not: the error is made here)."""
    from syncbus.service.server import port_in_use

    refused = OSError(errno.EACCES, "Permission denied")
    error = port_in_use("0.0.0.0", 80, refused)
    assert error is not None
    assert "port 80" in str(error) and "below 1024" in str(error) and "--port" in str(error)


@pytest.mark.multiprocess
def test_serve_refuses_no_auth_with_a_token(tmp_path: Path) -> None:
    proc = subprocess.run(
        _serve_command(tmp_path / "serve.db", free_port(), "--no-auth"),
        capture_output=True,
        text=True,
        env=_env(SYNCBUS_API_TOKEN="t"),
        timeout=60,
    )
    assert proc.returncode == 2 and "--no-auth" in proc.stderr and "drop one" in proc.stderr


@pytest.mark.multiprocess
def test_serve_with_no_auth_answers_without_a_token(tmp_path: Path) -> None:
    with serving(tmp_path / "serve.db", "--no-auth", env=_env()) as (url, output):
        assert httpx.get(f"{url}/api/tasks").status_code == 200
    assert "--no-auth" in output[0]  # the warning


@pytest.mark.multiprocess
def test_serve_takes_the_token_from_the_option(tmp_path: Path) -> None:
    with serving(tmp_path / "serve.db", "--token", "s3cret", env=_env()) as (url, _):
        assert httpx.get(f"{url}/api/tasks").status_code == 401
        auth = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{url}/api/tasks", headers=auth).status_code == 200


@pytest.mark.multiprocess
def test_serve_says_where_and_logs_connector_load_errors_at_start(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    with IntegrationBus(f"sqlite:///{db}") as bus:
        bus.create_schema()
        bus.register_connector(BrokenInitConnector)
    env = _env(SYNCBUS_API_TOKEN="t", SYNCBUS_TEST_BREAK_INIT="1")
    with serving(db, env=env) as (_, output):
        pass
    assert f"database sqlite:///{db}" in output[0]
    assert "warning: failed to load connector 'Broken'" in output[0]
    assert "crm credentials missing" in output[0]


@pytest.mark.multiprocess
def test_serve_creating_the_implicit_database_says_where(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "syncbus.cli", "serve", "--no-auth"]
    proc, _ = spawn_listening(
        lambda port: [*command, "--port", str(port)], cwd=tmp_path, env=_env()
    )
    try:
        assert (tmp_path / "syncbus.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert f"creating a new SQLite database at {tmp_path / 'syncbus.db'}" in out


def test_a_connector_that_cannot_be_imported_says_so_once(db_url: str) -> None:
    """The load error of a connector whose module is gone names its path once, with the
    import's own error and what to do."""
    with IntegrationBus(db_url) as bus:
        bus.create_schema()
        bus.register_connector(BrokenInitConnector)
        with bus.engine.begin() as c:
            c.exec_driver_sql("UPDATE syncbus_connector SET class_path = 'gone_module_xyz:Broken'")
    result = cli("--db", db_url, "connectors", "list")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "failed to load connector 'Broken' (gone_module_xyz:Broken): ModuleNotFoundError" in out
    error = out[out.index("failed to load connector") :]  # the table lists the path as well
    assert error.count("gone_module_xyz:Broken") == 1 and "cannot import connector" not in out
