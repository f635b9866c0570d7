"""The workers' registry under faults: a `syncbus worker` frozen (SIGSTOP) is listed as not
alive within three heartbeats and alive again once it goes on (SIGCONT); one killed (SIGKILL)
stays listed as not alive, and the dashboard names it; one stopped (SIGTERM) leaves the list.
On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from syncbus import IntegrationBus, create_app
from tests.helpers import ROOT, wait_for
from tests.http_server import asgi_client
from tests.seq import make_bus

pytestmark = pytest.mark.multiprocess
BEAT = "0.3"


def _worker(db_url: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "syncbus.cli", "worker", "--db", db_url, "--heartbeat", BEAT]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _cli(db_url: str, *args: str) -> str:
    command = [sys.executable, "-m", "syncbus.cli", *args, "--db", db_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _state(bus: IntegrationBus, pid: int) -> bool | None:
    """Whether the worker of process ``pid`` is listed alive (None: not listed)."""
    found = [w.alive for w in bus.list_workers() if w.pid == pid]
    return found[0] if found else None


def test_frozen_killed_and_stopped_workers(db_url: str) -> None:
    bus = make_bus(db_url)
    frozen, killed, stopped = (_worker(db_url) for _ in range(3))
    try:
        for p in (frozen, killed, stopped):
            wait_for(lambda p=p: _state(bus, p.pid) is True, timeout=60)
        assert {w.kind for w in bus.list_workers()} == {"worker"}
        listed = json.loads(_cli(db_url, "workers", "--json"))
        assert {(w["pid"], w["alive"]) for w in listed} == {
            (p.pid, True) for p in (frozen, killed, stopped)
        }

        os.kill(frozen.pid, signal.SIGSTOP)
        wait_for(lambda: _state(bus, frozen.pid) is False, timeout=10)
        assert _state(bus, killed.pid) is True  # the others are not taken for it
        os.kill(frozen.pid, signal.SIGCONT)
        wait_for(lambda: _state(bus, frozen.pid) is True, timeout=10)

        killed.kill()
        killed.wait()
        wait_for(lambda: _state(bus, killed.pid) is False, timeout=10)
        with asgi_client(create_app(bus, workers=0, no_auth=True)) as client:
            page = client.get("/admin/stats").text
        assert "Stopped reporting without stopping" in page and f"pid {killed.pid}," in page
        assert f"pid {frozen.pid}, 4 runs at once" in page  # alive, listed as such
        table = _cli(db_url, "workers")
        assert "Workers (2 alive)" in table and "not alive: stopped reporting" in table

        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(timeout=60) == 0
        assert _state(bus, stopped.pid) is None  # it left the list on its way out
        assert _state(bus, killed.pid) is False  # still there, for an hour
    finally:
        for p in (frozen, killed, stopped):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
            p.communicate()
        bus.close()
