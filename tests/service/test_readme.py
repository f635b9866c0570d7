"""The README, followed top to bottom in a fresh folder, works as printed: the demo, the
connector module and its script, then the service section against a real ``syncbus serve``.

And when a connector was registered from ``__main__``, the service's answer says how to fix it.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from syncbus import BaseIntegrationConnector, IntegrationBus, create_app
from syncbus.errors import ConnectorLoadError
from tests.helpers import ROOT, DictConnector
from tests.http_server import free_port, port_taken, running

README = ROOT / "README.md"
SRC = ROOT / "src"


def readme_blocks() -> list[tuple[str, str]]:
    """The README's fenced code blocks in order, as (language, body)."""
    return re.findall(r"```(\w+)\n(.*?)```", README.read_text(), flags=re.S)


def saved_as(body: str) -> str | None:
    """A Python block that starts with ``# name.py`` is a file the reader saves."""
    first = body.splitlines()[0] if body else ""
    match = re.fullmatch(r"# (\w+\.py)", first.strip())
    return match.group(1) if match else None


def _env(tmp_path: Path) -> dict[str, str]:
    """The test's environment, with a ``syncbus`` command on PATH that runs this checkout (the
    README's own PYTHONPATH comes first; this source tree is appended behind it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "syncbus"
    shim.write_text(
        "#!/bin/sh\n"
        f'PYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{SRC}" '
        f'exec {sys.executable} -m syncbus.cli "$@"\n'
    )
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCBUS_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(SRC)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _run_service_block(body: str, cwd: Path, env: dict[str, str]) -> str:
    """Run the bash block as printed, on a free port; whatever it started is stopped after.
    When another process took the port before `syncbus serve` bound it, run it on another."""
    for _ in range(5):
        out = _run_block_once(body.replace("8000", str(free_port())), cwd, env)
        if not port_taken(out):
            return out
    raise AssertionError(f"no free port in 5 attempts:\n{out}")


def _run_block_once(script: str, cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # a serve the block failed to stop
    assert proc.returncode == 0 or port_taken(out), out
    return out


@pytest.mark.slow
@pytest.mark.multiprocess
def test_readme_followed_top_to_bottom_in_a_fresh_folder(tmp_path: Path) -> None:
    env = _env(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    # Quick start: `syncbus demo` fills ./syncbus.db (pip install is the test's own setup).
    _run(["syncbus", "demo"], work, env, timeout=120)
    service_blocks = []
    for lang, body in readme_blocks():
        if lang == "python" and (name := saved_as(body)):
            (work / name).write_text(body)
            if "process_tasks" in body:  # a script: the README says to run it
                out = _run([sys.executable, name], work, env, timeout=60)
                assert "applied=3" in out, out
        elif lang == "bash" and "syncbus serve" in body:
            service_blocks.append(body)
    assert len(service_blocks) == 1, "the README has one service section"
    out = _run_service_block(service_blocks[0], work, env)
    assert '{"task_id":4}' in out, out
    assert "Incoming tasks (0)" in out, out  # the task logged over HTTP was applied

    with IntegrationBus(f"sqlite:///{work / 'directory.db'}") as bus:
        user = bus.get_object("cms.user", "jdoe")
        role = bus.get_object("cms.role", "editors", site_name="main")
        assert user is not None and role is not None
        assert bus.find_objects("cms.userrole", user_id=user["user_id"], role_id=role["role_id"])
        assert bus.get_object("cms.user", "asmith") is not None  # logged over HTTP
        assert bus.list_tasks() == []
        assert [c.class_path for c in bus.list_connectors()] == ["directory:DirectoryConnector"]
    with IntegrationBus(f"sqlite:///{work / 'syncbus.db'}") as demo:  # the demo is untouched
        crm = demo.list_connectors()
        assert sorted(str(c.class_path) for c in crm) == [
            "syncbus.examples.crm.connector:CrmConnector",
            "syncbus.examples.crm.connector:CrmEntityConnector",  # the demo's ENTITY part
        ]


def _main_connector() -> type[BaseIntegrationConnector]:
    """A connector class as a script defines it: in ``__main__``."""
    cls = type("MainConnector", (DictConnector,), {"__module__": "__main__"})
    return cls


def test_a_connector_registered_from_main_answers_503_naming_the_fix(db_url: str) -> None:
    with IntegrationBus(db_url) as script:
        script.create_schema()
        script.register_connector(_main_connector()())
    with IntegrationBus(db_url) as service, running(create_app(service, api_token="t")) as url:
        answer = httpx.post(
            f"{url}/api/connectors/TestConnector/tasks",
            headers={"Authorization": "Bearer t"},
            json={"task_type": "CreateObject", "object": {"type": "cms.user", "data": {}}},
        )
        listed = httpx.get(f"{url}/api/connectors", headers={"Authorization": "Bearer t"})
    assert answer.status_code == 503
    detail = answer.json()["detail"]
    assert "move the class into an importable module" in detail
    assert "'module:Class'" in detail and "PYTHONPATH" in detail
    # Recorded like any load failure: the API's load_error and a LOADCONNECTOR event.
    (info,) = listed.json()["connectors"]
    assert info["load_error"] and "importable module" in info["load_error"]
    with IntegrationBus(db_url) as bus:
        events = [e for e in bus.event_log() if e.code == "LOADCONNECTOR"]
    assert len(events) == 1 and "importable module" in events[0].message


def test_a_connector_module_not_on_the_path_names_pythonpath(db_url: str) -> None:
    with IntegrationBus(db_url) as bus:
        bus.create_schema()
        fix = "put the folder that holds 'nowhere_hr' on PYTHONPATH"
        with pytest.raises(ConnectorLoadError, match=fix):
            bus.register_connector("nowhere_hr:HrConnector")
