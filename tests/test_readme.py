"""The README's connector example runs as printed and does what its comment says."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_connector_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script))
    from syncbus import IntegrationBus

    with IntegrationBus(f"sqlite:///{tmp_path / 'syncbus.db'}") as bus:
        user = bus.get_object("cms.user", "jdoe")
        role = bus.get_object("cms.role", "editors", site_name="main")
        assert user is not None and role is not None
        assert bus.find_objects("cms.userrole", user_id=user["user_id"], role_id=role["role_id"])
        assert bus.list_tasks() == []
