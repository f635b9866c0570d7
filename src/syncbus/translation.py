"""Foreign-key translation: capture identities at log time, resolve them at process time.

At log time the connector names, for each external id in a foreign-key, parent or group
column, the portable identity of what it points to (code name or GUID, site, parent, group;
pages by node GUID + culture + site). Those records travel inside the task. At process time
the records of a whole batch are resolved to internal ids with a few set-wise queries; a cache
keeps the batch consistent as its own tasks create and delete objects.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from typing import Any

import sqlalchemy as sa

from syncbus.connector import BaseIntegrationConnector
from syncbus.content.paths import canonical_culture
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import tree_table
from syncbus.content.types import ObjectType
from syncbus.content.validation import (
    check_columns,
    check_external_id,
    check_identity_text,
    check_values,
    show,
)
from syncbus.errors import InvalidObjectError, TranslationError
from syncbus.model import DocumentParams, InternalObject, ObjectParams
from syncbus.payload import PAGE_RECORD, Payload, TranslationRecord, id_key
from syncbus.store.db import IN_CHUNK
from syncbus.store.dialect import dialect_of, prebuilt

_MAX_DEPTH = 32


class Capture:
    """Builds the translation records of one task by asking the connector (log time)."""

    def __init__(self, connector: BaseIntegrationConnector, registry: TypeRegistry) -> None:
        self.connector = connector
        self.registry = registry
        self.records: list[TranslationRecord] = []
        self._index: dict[tuple[str, str], int] = {}

    def capture_object_tree(self, obj: InternalObject, main: ObjectType | None = None) -> None:
        ot = self.registry.object_type(obj.object_type)
        check_columns(ot, obj.data)
        for col, target in ot.references().items():
            value = obj.data.get(col)
            if value is None:
                continue
            self.object_ref(value, target, f"column {col!r} of {ot.name}")
        for child in obj.children:
            self.capture_object_tree(child, ot)

    def object_ref(self, external_id: Any, object_type: str, where: str, depth: int = 0) -> int:
        key = id_key(object_type, external_id)
        if key in self._index:
            return self._index[key]
        if depth > _MAX_DEPTH:
            raise TranslationError(f"parent chain of {object_type} {show(external_id)} is too deep")
        check_external_id(external_id, where)
        name = self.connector.connector_name
        params = self.connector.get_internal_object_params(external_id, object_type)
        if params is None:
            raise TranslationError(
                f"connector {name!r} gave no identity for {object_type} {external_id!r} "
                f"(referenced by {where}): get_internal_object_params returned None"
            )
        if not isinstance(params, ObjectParams) or not params.code_name:
            raise TranslationError(
                f"connector {name!r}: get_internal_object_params({external_id!r}, "
                f"{object_type!r}) must return ObjectParams with a code_name, got {params!r}"
            )
        what = f"the identity of {object_type} {show(external_id)}"
        if isinstance(params.code_name, str) and not params.code_name.strip():
            raise TranslationError(
                f"connector {name!r}: get_internal_object_params({external_id!r}, "
                f"{object_type!r}) gave a blank code_name {params.code_name!r}: no object has "
                "one (a code name is required and not blank)"
            )
        check_identity_text(name, f"{what} (code_name)", params.code_name, 450)
        check_identity_text(name, f"{what} (site_name)", params.site_name, 100)
        if params.site_name is not None and not isinstance(params.site_name, str):
            raise TranslationError(
                f"connector {name!r}: get_internal_object_params({external_id!r}, "
                f"{object_type!r}) gave site_name {params.site_name!r}: a site name is text"
            )
        target = self.registry.object_type(object_type)
        self._check_code_name(target, params.code_name, external_id)
        parent = group = None
        if params.parent_id is not None and target.parent_type:
            parent = self.object_ref(
                params.parent_id, target.parent_type, f"the parent of {object_type}", depth + 1
            )
        if params.group_id is not None and target.group_type:
            group = self.object_ref(
                params.group_id, target.group_type, f"the group of {object_type}", depth + 1
            )
        record = TranslationRecord(
            object_type, external_id, params.code_name, params.site_name, parent, group
        )
        return self._add(key, record)

    def _check_code_name(self, target: ObjectType, code_name: Any, external_id: Any) -> None:
        """A code name the target's identity column could not hold (an int for a text
        column) matches no object: refused now, not when the task is applied."""
        column = target.key_column
        if column is None:
            return
        try:
            check_values(target, {column: code_name}, external_refs=True)
        except InvalidObjectError as exc:
            raise TranslationError(
                f"connector {self.connector.connector_name!r}: get_internal_object_params("
                f"{external_id!r}, {target.name!r}) gave code_name {code_name!r}, which its "
                f"identity column cannot hold: {exc}"
            ) from exc

    def page_ref(self, external_id: Any, class_name: str, where: str) -> int:
        key = id_key(PAGE_RECORD, external_id)
        if key in self._index:
            return self._index[key]
        check_external_id(external_id, where)
        name = self.connector.connector_name
        params = self.connector.get_internal_document_params(external_id, class_name)
        if params is None:
            raise TranslationError(
                f"connector {name!r} gave no identity for page {external_id!r} (referenced by "
                f"{where}): get_internal_document_params returned None"
            )
        if not isinstance(params, DocumentParams):
            raise TranslationError(
                f"connector {name!r}: get_internal_document_params must return DocumentParams, "
                f"got {params!r}"
            )
        what = f"the identity of page {show(external_id)}"
        check_identity_text(name, f"{what} (node_guid)", str(params.node_guid), 36)
        check_identity_text(name, f"{what} (culture_code)", params.culture_code, 10)
        check_identity_text(name, f"{what} (site_name)", params.site_name, 100)
        record = TranslationRecord(
            PAGE_RECORD,
            external_id,
            str(params.node_guid).lower(),
            params.site_name,
            culture=canonical_culture(params.culture_code),
        )
        return self._add(key, record)

    def _add(self, key: tuple[str, str], record: TranslationRecord) -> int:
        self._index[key] = len(self.records)
        self.records.append(record)
        return self._index[key]


# An internal identity: (object type, code name or GUID, site id, parent id, group id);
# pages: ("#page", node GUID, site id, None, None).
Identity = tuple[str, str, int | None, int | None, int | None]


class Resolver:
    """Resolves translation records to internal ids for one batch (process time)."""

    def __init__(self, conn: sa.Connection, registry: TypeRegistry, sites: dict[str, int]):
        self.conn = conn
        self.registry = registry
        self.sites = sites
        # Per object type (pages: PAGE_RECORD), so that forgetting a type costs nothing.
        self._found: dict[str, dict[Identity, int]] = defaultdict(dict)
        self._missing: dict[str, set[Identity]] = defaultdict(set)
        self._identities: dict[tuple[TranslationRecord, str | None], Identity] = {}
        # Moves whenever an id found before may no longer be what a record resolves to (a
        # forget, a reset, a learn that changes a known id): a translation made at an
        # unchanged generation still holds (``Applier.translate``, ``TargetCache.translated``).
        self.generation = 0

    # -- identities -----------------------------------------------------------------------
    def identity(
        self, payload: Payload, index: int, task_site: str | None, depth: int = 0
    ) -> Identity | None:
        """The internal identity of record ``index``; None when a parent/group/site is unknown.

        A record with no parent and no group has the same identity wherever it appears in the
        batch (the batch's sites and types do not change): it is computed once."""
        rec = payload.records[index]
        if rec.parent is not None or rec.group is not None:
            return self._identity(payload, rec, task_site, depth)
        key = (rec, task_site)
        try:
            known = self._identities.get(key)
        except TypeError:  # an external id JSON cannot hash (a list, say): not kept
            return self._identity(payload, rec, task_site, depth)
        if known is None:
            known = self._identity(payload, rec, task_site, depth)
            if known is not None:
                self._identities[key] = known
        return known

    def _identity(
        self, payload: Payload, rec: TranslationRecord, task_site: str | None, depth: int
    ) -> Identity | None:
        site_name = rec.site_name or task_site
        if rec.is_page:
            site_id = self.sites.get(site_name or "")
            if site_id is None:
                return None
            return (PAGE_RECORD, str(rec.code_name), site_id, None, None)
        ot = self.registry.object_type(rec.object_type)
        site_id = None
        if ot.site_column:
            site_id = self.sites.get(site_name or "")
            if site_id is None:
                return None
        parent = group = None
        if depth > _MAX_DEPTH:
            return None
        if rec.parent is not None:
            parent = self.resolve(payload, rec.parent, task_site, depth + 1)
            if parent is None:
                return None
        if rec.group is not None:
            group = self.resolve(payload, rec.group, task_site, depth + 1)
            if group is None:
                return None
        return (ot.name, str(rec.code_name), site_id, parent, group)

    def resolve(
        self, payload: Payload, index: int, task_site: str | None, depth: int = 0
    ) -> int | None:
        ident = self.identity(payload, index, task_site, depth)
        if ident is None:
            return None
        found = self._found[ident[0]].get(ident)
        if found is None and ident not in self._missing[ident[0]]:
            self._query([ident])
            found = self._found[ident[0]].get(ident)
        return found

    def _known(self, ident: Identity) -> bool:
        return ident in self._found[ident[0]] or ident in self._missing[ident[0]]

    # -- set-wise prefetch ----------------------------------------------------------------
    def prefetch(self, items: Iterable[tuple[Payload, str | None]]) -> None:
        """Resolve every record of a batch with a few queries per type and level."""
        pending = [(p, i, site) for p, site in items for i in range(len(p.records))]
        for _ in range(_MAX_DEPTH):
            wanted: list[Identity] = []
            later = []
            for payload, i, site in pending:
                rec = payload.records[i]
                deps = [d for d in (rec.parent, rec.group) if d is not None]
                if any(self._unknown(payload, d, site) for d in deps):
                    later.append((payload, i, site))
                    continue
                ident = self.identity(payload, i, site)
                if ident is not None and not self._known(ident):
                    wanted.append(ident)
            if wanted:
                self._query(wanted)
            if not later or len(later) == len(pending):
                return
            pending = later

    def _unknown(self, payload: Payload, index: int, site: str | None) -> bool:
        ident = self.identity(payload, index, site)
        return ident is not None and not self._known(ident)

    def _query(self, idents: list[Identity]) -> None:
        by_type: dict[str, list[Identity]] = defaultdict(list)
        for ident in set(idents):
            by_type[ident[0]].append(ident)
        for type_name, group in by_type.items():
            if type_name == PAGE_RECORD:
                self._query_pages(group)
            else:
                self._query_objects(self.registry.object_type(type_name), group)
            found = self._found[type_name]
            self._missing[type_name].update(i for i in group if i not in found)

    def _query_objects(self, ot: ObjectType, idents: list[Identity]) -> None:
        dialect = dialect_of(self.conn)
        table = self.registry.table(ot.name)
        key_col = table.c[str(ot.key_column)]
        cols: list[sa.ColumnElement[Any]] = [table.c[ot.id_column], key_col]
        for extra in (ot.site_column, ot.parent_column, ot.group_column):
            cols.append(table.c[extra] if extra else sa.null())
        stmt = prebuilt(
            table,
            ("identities", dialect.name, ot.name),
            lambda: sa.select(*cols).where(dialect.any_of(key_col, "codes")),
        )
        codes = sorted({i[1] for i in idents})
        candidates: dict[str, list[tuple[int, Any, Any, Any]]] = defaultdict(list)
        for start in range(0, len(codes), IN_CHUNK):
            args = dialect.any_of_args(key_col, "codes", codes[start : start + IN_CHUNK])
            for oid, code, site, parent, group in self.conn.execute(stmt, args):
                candidates[str(code)].append((int(oid), site, parent, group))
        for ident in idents:
            _, code, site, parent, group = ident
            matches = [
                oid
                for oid, s, p, g in candidates.get(code, ())
                if (site is None or s == site)
                and (parent is None or p == parent)
                and (group is None or g == group)
            ]
            if matches:
                self._found[ot.name][ident] = min(matches)

    def _query_pages(self, idents: list[Identity]) -> None:
        dialect = dialect_of(self.conn)
        guids = sorted({i[1] for i in idents})
        t = tree_table
        rows: dict[tuple[str, int], int] = {}
        stmt = prebuilt(
            t,
            ("page identities", dialect.name),
            lambda: sa.select(t.c.node_id, t.c.node_guid, t.c.node_site_id).where(
                dialect.any_of(t.c.node_guid, "guids")
            ),
        )
        for start in range(0, len(guids), IN_CHUNK):
            args = dialect.any_of_args(t.c.node_guid, "guids", guids[start : start + IN_CHUNK])
            for node_id, guid, site_id in self.conn.execute(stmt, args):
                rows[(str(guid), int(site_id))] = int(node_id)
        for ident in idents:
            found = rows.get((ident[1], int(ident[2] or 0)))
            if found is not None:
                self._found[PAGE_RECORD][ident] = found

    # -- keeping the cache true within a batch --------------------------------------------
    def learn(self, ot: ObjectType, row: dict[str, Any], site_id: int | None, oid: int) -> None:
        """Remember an object a task of this batch just wrote."""
        if ot.key_column is None or row.get(ot.key_column) is None:
            return
        ident: Identity = (
            ot.name,
            str(row[ot.key_column]),
            site_id if ot.site_column else None,
            row.get(ot.parent_column) if ot.parent_column else None,
            row.get(ot.group_column) if ot.group_column else None,
        )
        found = self._found[ot.name]
        if found.get(ident, oid) != oid:
            self.generation += 1
        found[ident] = oid
        self._missing.pop(ot.name, None)

    def forget(self, type_names: AbstractSet[str]) -> None:
        """Drop what the cache knows of these types (after a delete that may cascade)."""
        self.generation += 1
        for name in type_names:
            self._found.pop(name, None)
            self._missing.pop(name, None)

    def reset(self) -> None:
        """Forget everything (after a rolled-back task: what it wrote is gone again)."""
        self.generation += 1
        self._found.clear()
        self._missing.clear()

    def forget_pages(self) -> None:
        """After a subtree of pages went."""
        self.forget({PAGE_RECORD})

    def forget_page(self, site_id: int, node_guid: str) -> None:
        """After a leaf page's node went."""
        self.generation += 1
        self._found[PAGE_RECORD].pop((PAGE_RECORD, node_guid, site_id, None, None), None)

    def pages_created(self) -> None:
        """After a page create: a page that was missing may exist now."""
        self._missing.pop(PAGE_RECORD, None)
