"""Fail when code outside ``syncbus.store`` names one of the bus's own tables in a string.

The import contract (``lint-imports``) keeps every module but the store's from importing the
bus's table objects (``syncbus.store.tables``); this check closes the other way in: raw SQL
text such as ``sa.text("DELETE FROM syncbus_task")``. Run by ``.ci/run`` with the linters.

Usage: python scripts/check_store_boundary.py [SRC_DIR]   (default: src/syncbus)
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

BUS_TABLES = (
    "syncbus_connector",
    "syncbus_task",
    "syncbus_idempotency",
    "syncbus_sync_log",
    "syncbus_event_log",
    "syncbus_setting",
    "syncbus_type",
    "syncbus_lease",
)
PATTERN = re.compile(r"\b(" + "|".join(BUS_TABLES) + r")\b")
# The migrations create the tables; the store owns them; the bench's floors are hand-written
# SQL baselines on purpose (see docs/performance.md).
ALLOWED = ("store/", "bench/")


def violations(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and (match := PATTERN.search(node.value))
            ):
                found.append(
                    f"{path}:{node.lineno}: names the bus table {match.group(1)!r}; "
                    "SQL on the bus's tables belongs in syncbus.store"
                )
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else "src/syncbus")
    found = violations(root)
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print(f"store boundary kept: no SQL on the bus's tables outside syncbus.store ({root})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
