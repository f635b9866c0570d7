"""Correctness gates: a phase whose result is wrong reports no figure, it raises.

* content: the database holds exactly what the reference model computed (every identity, every
  value; a task applied out of order leaves an older value behind, a lost task a missing or
  stale row, a task applied twice after a later one a stale row);
* counts: every task logged was applied exactly once (applied == logged, nothing failed) and
  nothing is left queued.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from syncbus.bench.reference import Content
from syncbus.bench.workload import SITE
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import document_table, tree_table
from syncbus.errors import SyncBusError

_SHOW = 3


class BenchGateError(SyncBusError):
    """A correctness gate of the benchmark failed; the run reports no figures."""

    def __init__(self, gate: str, phase: str, detail: str) -> None:
        super().__init__(f"bench gate {gate!r} failed in phase {phase!r}: {detail}")
        self.gate = gate
        self.phase = phase
        self.detail = detail


# A hook the tests use to corrupt the database right before a content gate: (phase, engine).
BeforeGate = Callable[[str, sa.Engine], None]


class Gates:
    """Runs the gates and records which ran and passed (for the report)."""

    def __init__(self, registry: TypeRegistry, before_gate: BeforeGate | None = None) -> None:
        self.registry = registry
        self.before_gate = before_gate
        self.passed: list[dict[str, str]] = []

    def require(self, ok: bool, gate: str, phase: str, detail: str) -> None:
        if not ok:
            raise BenchGateError(gate, phase, detail)
        self.passed.append({"gate": gate, "phase": phase, "detail": detail})

    def counts(self, phase: str, *, logged: int, applied: int, failed: int, queued: int) -> None:
        """Nothing lost, nothing applied twice, nothing failed, nothing left in the queue."""
        detail = f"logged={logged} applied={applied} failed={failed} left queued={queued}"
        ok = applied == logged and failed == 0 and queued == 0
        self.require(ok, "counts", phase, detail)

    def content(self, phase: str, engine: sa.Engine, expected: Content) -> None:
        if self.before_gate is not None:
            self.before_gate(phase, engine)
        actual = read_content(engine, self.registry)
        problems = compare(expected, actual)
        sizes = ", ".join(f"{k}={len(v)}" for k, v in expected.sections().items())
        self.require(not problems, "content", phase, "; ".join(problems) or f"equal ({sizes})")


def compare(expected: Content, actual: Content) -> list[str]:
    """What differs, per object type; empty when the two are equal."""
    problems: list[str] = []
    got = actual.sections()
    for name, want in expected.sections().items():
        have = got[name]
        missing = [k for k in want if k not in have]
        extra = [k for k in have if k not in want]
        wrong = [k for k in want if k in have and have[k] != want[k]]
        if not (missing or extra or wrong):
            continue
        parts = [f"{name}: {len(want)} expected, {len(have)} found"]
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {_few(missing)})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {_few(extra)})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with other values (e.g. {k!r}: expected {want[k]!r}, "
                f"found {have[k]!r})"
            )
        problems.append(", ".join(parts))
    return problems


def _few(keys: list[Any]) -> str:
    return ", ".join(repr(k) for k in sorted(keys, key=repr)[:_SHOW])


def read_content(engine: sa.Engine, registry: TypeRegistry) -> Content:
    """What the content repository holds, by identity (internal ids mapped to names)."""
    users = registry.table("cms.user")
    roles = registry.table("cms.role")
    forums = registry.table("forums.forum")
    posts = registry.table("forums.forumpost")
    userroles = registry.table("cms.userrole")
    site = registry.table("cms.site")
    out = Content()
    with engine.connect() as conn:
        site_id = conn.execute(sa.select(site.c.site_id).where(site.c.site_name == SITE)).scalar()
        for r in conn.execute(sa.select(users)):
            out.users[r.user_name] = (r.email, r.first_name, r.last_name)
        for r in conn.execute(sa.select(roles.c.role_name, roles.c.role_display_name)):
            out.roles[r.role_name] = r.role_display_name
        for r in conn.execute(sa.select(forums.c.forum_name, forums.c.forum_display_name)):
            out.forums[r.forum_name] = r.forum_display_name
        stmt = (
            sa.select(
                posts.c.post_guid,
                forums.c.forum_name,
                users.c.user_name,
                posts.c.post_subject,
                posts.c.post_text,
            )
            .join(forums, forums.c.forum_id == posts.c.forum_id)
            .join(users, users.c.user_id == posts.c.post_user_id)
        )
        for guid, forum, user, subject, text in conn.execute(stmt):
            out.posts[str(guid)] = (forum, user, subject, text)
        n_posts = conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar_one()
        if n_posts != len(out.posts):  # a post whose forum or author is gone
            out.posts["<posts with a dangling reference>"] = ("", "", str(n_posts), "")
        stmt = (
            sa.select(users.c.user_name, roles.c.role_name)
            .select_from(userroles)
            .join(users, users.c.user_id == userroles.c.user_id)
            .join(roles, roles.c.role_id == userroles.c.role_id)
        )
        out.memberships = {(str(row[0]), str(row[1])) for row in conn.execute(stmt)}
        _read_pages(conn, registry, site_id, out)
    return out


def _read_pages(conn: sa.Connection, registry: TypeRegistry, site_id: Any, out: Content) -> None:
    tree, docs = tree_table, document_table
    articles = registry.page_table("cms.article")
    assert articles is not None
    folders = sa.select(tree.c.node_alias_path, docs.c.document_name).join(
        docs, docs.c.document_node_id == tree.c.node_id
    )
    folders = folders.where(tree.c.node_site_id == site_id, tree.c.node_class_name == "cms.folder")
    out.folders = {path: name for path, name in conn.execute(folders)}
    stmt = (
        sa.select(
            tree.c.node_alias_path,
            docs.c.document_name,
            articles.c.article_title,
            articles.c.article_summary,
            articles.c.article_text,
        )
        .join(docs, docs.c.document_node_id == tree.c.node_id)
        .outerjoin(articles, articles.c.document_id == docs.c.document_id)
        .where(tree.c.node_site_id == site_id, tree.c.node_class_name == "cms.article")
    )
    for path, name, title, summary, text in conn.execute(stmt):
        out.articles[path] = (name, title, summary, text)
    # An article node left without a document (a half-applied delete) is wrong too.
    nodes = sa.select(sa.func.count()).where(
        tree.c.node_site_id == site_id, tree.c.node_class_name == "cms.article"
    )
    n_nodes = conn.execute(nodes).scalar_one()
    if n_nodes != len(out.articles):
        out.articles["<article nodes without a document>"] = ("", "", str(n_nodes), "")
