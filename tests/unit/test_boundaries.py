"""The store boundary holds, and the two checks that guard it can fail: the import contract
(``lint-imports``) on a module outside ``syncbus.store`` importing the bus's tables, and the
source check on string SQL naming a bus table."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import check_store_boundary

LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")


def test_the_source_has_no_sql_on_bus_tables_outside_the_store() -> None:
    assert check_store_boundary.violations(ROOT / "src" / "syncbus") == []


def test_the_source_check_finds_string_sql_outside_the_store(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "tasks.py").write_text('Q = "DELETE FROM syncbus_task"\n')
    (tmp_path / "ok.py").write_text(
        '"""Mentions syncbus_task in a docstring."""\nX = "syncbus_tasks"\n'
    )
    (tmp_path / "bad.py").write_text(
        'import sqlalchemy as sa\nQ = sa.text("SELECT * FROM syncbus_lease")\n'
    )
    found = check_store_boundary.violations(tmp_path)
    assert len(found) == 1
    assert "bad.py:2" in found[0] and "syncbus_lease" in found[0]


@pytest.mark.skipif(not Path(LINT_IMPORTS).exists(), reason="import-linter is not installed")
def test_the_import_contract_fails_on_a_new_import_of_the_bus_tables(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "syncbus", tmp_path / "syncbus")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tmp_path)}

    def lint() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LINT_IMPORTS, "--no-cache"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    clean = lint()
    assert clean.returncode == 0, clean.stdout + clean.stderr
    readmodel = tmp_path / "syncbus" / "readmodel.py"
    readmodel.write_text(
        readmodel.read_text() + "\nfrom syncbus.store.tables import task_table  # noqa\n"
    )
    broken = lint()
    assert broken.returncode != 0
    assert "syncbus.readmodel is not allowed to import syncbus.store.tables" in broken.stdout
