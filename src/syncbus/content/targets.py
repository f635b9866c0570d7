"""Ids of the objects a batch writes, looked up set-wise before the batch is applied.

Without it every upsert first SELECTs its object by identity (one round trip per task); with it
the batch's identities are fetched with one query per object type, and each task goes straight
to its UPDATE or INSERT. The cache stays true within the batch: inserts add their id, deletes
mark their row absent and drop the other types that cascade from them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import sqlalchemy as sa

from syncbus.content.objects import TargetKey, coerce_row, target_key
from syncbus.content.pages import PageCache
from syncbus.content.registry import TypeRegistry
from syncbus.content.types import ObjectType
from syncbus.store.db import IN_CHUNK


class TargetCache:
    """Known ids (None: known to be absent) of target objects, by exact identity; and the
    batch's page nodes and documents."""

    def __init__(self) -> None:
        self.ids: dict[TargetKey, int | None] = {}
        self.pages = PageCache()

    def clear(self) -> None:
        """Forget everything (after a rolled-back task: what it wrote is gone again)."""
        self.ids.clear()
        self.pages.clear()

    def get(self, key: TargetKey | None) -> tuple[bool, int | None]:
        if key is None or key not in self.ids:
            return False, None
        return True, self.ids[key]

    def put(self, key: TargetKey | None, oid: int | None) -> None:
        if key is not None:
            self.ids[key] = oid

    def forget(self, type_names: AbstractSet[str]) -> None:
        if type_names:
            self.ids = {k: v for k, v in self.ids.items() if k[0] not in type_names}

    def prefetch(
        self,
        conn: sa.Connection,
        registry: TypeRegistry,
        targets: Iterable[tuple[ObjectType, Mapping[str, Any], int | None]],
    ) -> None:
        """Look up every (type, row, site) identity with one query per type."""
        wanted: dict[str, dict[TargetKey, ObjectType]] = defaultdict(dict)
        for ot, row, site_id in targets:
            key = target_key(ot, coerce_row(ot, row), site_id)
            if key is not None and key not in self.ids:
                wanted[ot.name][key] = ot
        for keys in wanted.values():
            ot = next(iter(keys.values()))
            self._fetch(conn, registry, ot, list(keys))

    def _fetch(
        self, conn: sa.Connection, registry: TypeRegistry, ot: ObjectType, keys: list[TargetKey]
    ) -> None:
        table = registry.table(ot.name)
        ident = ot.identity_columns()
        scope = ot.site_column if ot.site_column and not ot.is_binding else None
        cols = [table.c[ot.id_column], *(table.c[c] for c in ident)]
        if scope:
            cols.append(table.c[scope])
        # By the whole identity: a binding type's first column alone (e.g. the role of a
        # user-role binding) would match a large share of the table in every batch.
        identity: Any = (
            table.c[ident[0]] if len(ident) == 1 else sa.tuple_(*(table.c[c] for c in ident))
        )
        wanted = sorted({k[1][0] if len(ident) == 1 else k[1] for k in keys}, key=repr)
        found: dict[TargetKey, int] = {}
        for start in range(0, len(wanted), IN_CHUNK):
            stmt = sa.select(*cols).where(identity.in_(wanted[start : start + IN_CHUNK]))
            for row in conn.execute(stmt):
                site = row[-1] if scope else None
                key = (ot.name, tuple(row[1 : 1 + len(ident)]), site)
                if key not in found or row[0] < found[key]:
                    found[key] = int(row[0])
        for key in keys:
            self.ids[key] = found.get(key)
