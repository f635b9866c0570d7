"""`syncbus serve --processes N`: several server processes on one port share the logging load;
every task is logged once and applied; SIGTERM ends them all gracefully (status 0)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.helpers import ROOT, healthz, wait_for
from tests.http_server import spawn_listening
from tests.seq import make_bus

pytestmark = pytest.mark.multiprocess


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def replaced(pid: int, victim: int) -> bool:
    """Three server processes again, the victim not among them: one look (two could see three
    processes before the victim died and no victim after, before any replacement started)."""
    kids = children(pid)
    return len(kids) == 3 and victim not in kids


def logged_total(url: str) -> float:
    """syncbus_tasks_logged_total of connector Seq, as one scrape of /metrics answers it."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    lines = [line for line in text.splitlines() if line.startswith("syncbus_tasks_logged_total")]
    return sum(float(line.split()[-1]) for line in lines if 'connector="Seq"' in line)


def test_three_server_processes_log_and_apply_every_task_once(db_url: str) -> None:
    bus = make_bus(db_url)
    serve = [sys.executable, "-m", "syncbus.cli", "serve", "--db", db_url, "--processes", "3"]
    proc, url = spawn_listening(
        lambda port: [*serve, "--port", str(port), "--no-auth"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        wait_for(lambda: healthz(url, proc) == 200, timeout=30)
        assert len(children(proc.pid)) == 3

        def post(n: int) -> int:
            with httpx.Client(base_url=url, timeout=30) as client:
                r = client.post(
                    "/api/connectors/Seq/tasks",
                    json={"task_type": "UpdateObject", "object": {"key": f"k{n % 5}", "n": n}},
                )
                assert r.status_code == 201, r.text
                return int(r.json()["task_id"])

        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(post, range(300)))
        assert len(set(ids)) == 300
        wait_for(lambda: bus.queue_size() == 0, timeout=60)
        for k in range(5):  # the task logged last (highest id) of each key won
            row = bus.get_object("seq.counter", f"k{k}")
            last = max((task_id, n) for n, task_id in enumerate(ids) if n % 5 == k)
            assert row is not None and row["n"] == last[1]
        # Any process's /metrics counts every process's work (a new user's trial read 5, 3, 5
        # as scrapes landed on one process or another).
        for _ in range(9):
            assert logged_total(url) == 300
        # A server process killed is replaced (said on stderr), and what it counted stays.
        victim = children(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: replaced(proc.pid, victim))
        wait_for(lambda: healthz(url, proc) == 200, timeout=30)
        assert logged_total(url) == 300
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"(pid {victim}) ended with status -9" in err and "starting another" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        bus.close()


def test_an_admin_session_holds_on_every_server_process(sqlite_url: str) -> None:
    """Connections are spread over the processes: each must accept the session cookie the
    sign-in got from another (one signing secret for all)."""
    make_bus(sqlite_url).close()
    serve = [sys.executable, "-m", "syncbus.cli", "serve", "--db", sqlite_url, "--processes", "3"]
    env = {k: v for k, v in os.environ.items() if k != "SYNCBUS_SESSION_SECRET"}
    proc, url = spawn_listening(
        lambda port: [*serve, "--port", str(port)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        env={**env, "SYNCBUS_API_TOKEN": "processes-test"},
    )
    try:
        wait_for(lambda: healthz(url, proc) == 200, timeout=30)
        with httpx.Client(base_url=url, timeout=30) as first:
            signed = first.post(
                "/admin/signin",
                data={"token": "processes-test", "name": "Olivia", "next": "/admin/"},
            )
            assert signed.status_code == 303, signed.text
            cookies = dict(first.cookies)
        answers = []
        for _ in range(30):  # each on a new connection
            with httpx.Client(base_url=url, timeout=30, cookies=cookies) as client:
                answers.append(client.get("/admin/").status_code)
        assert answers == [200] * 30, answers
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_server_processes_stop_when_serve_is_killed(sqlite_url: str) -> None:
    """A new user's trial: SIGKILL of `serve --processes 2` left both server processes running,
    orphaned and holding the port, and a new `serve` then failed with a traceback. Now they
    notice their parent is gone and stop; and a port another process holds is a one-line
    error, whether `serve` runs one process or several."""
    make_bus(sqlite_url).close()
    serve = [sys.executable, "-m", "syncbus.cli", "serve", "--db", sqlite_url, "--no-auth"]
    proc, url = spawn_listening(
        lambda port: [*serve, "--port", str(port), "--processes", "2"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    port = url.rsplit(":", 1)[1]
    try:
        wait_for(lambda: healthz(url, proc) == 200, timeout=30)
        kids = children(proc.pid)
        assert len(kids) == 2
        for processes in ("1", "2"):  # the port is taken: one line, exit status 2
            again = subprocess.run(
                [*serve, "--port", port, "--processes", processes],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert again.returncode == 2, again.stderr
            errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and f"port {port}" in errors[0], again.stderr
            assert "Traceback" not in again.stderr
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        wait_for(lambda: not any(_alive(pid) for pid in kids), timeout=20)
        _, err = proc.communicate(timeout=30)
        assert "is gone; server process" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (an orphan's zombie is reaped by init)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False
