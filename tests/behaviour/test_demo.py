"""The sample CRM integration, end to end, on each backend."""

from __future__ import annotations

import io

from rich.console import Console

from syncbus import IntegrationBus, Ordering, ProcessType
from syncbus.examples.crm.connector import CrmConnector, CrmEntityConnector, load_crm_data
from syncbus.examples.crm.demo import (
    CONNECTOR,
    ENTITY_CONNECTOR,
    DemoReport,
    EntityDemoReport,
    run_demo,
    run_entity_demo,
)
from syncbus.examples.crm.feed import crm_tasks, new_hire_tasks
from tests.helpers import Clock


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False), out


def test_feed_is_ordered_and_keyed() -> None:
    tasks = crm_tasks(load_crm_data())
    assert len(tasks) == 106
    keys = [t.idempotency_key for t in tasks]
    assert len(set(keys)) == len(keys)
    labels = [t.label for t in tasks]
    # The author of post 9016 is deleted before the posts are sent.
    assert labels.index("DeleteObject user 1020") < labels.index("CreateObject post 9001")
    # The article whose folder never arrives comes last.
    assert tasks[-1].obj["id"] == 412
    assert tasks[-1].process_type is ProcessType.SKIP_ON_ERROR


def test_connector_translation_answers() -> None:
    connector = CrmConnector()
    user = connector.get_internal_object_params(1005, "cms.user")
    assert user is not None and (user.code_name, user.site_name) == ("emma.silva", None)
    role = connector.get_internal_object_params(503, "cms.role")
    assert role is not None and (role.code_name, role.site_name) == ("sales", "main")
    assert connector.get_internal_object_params(599, "cms.role") is None
    forum = connector.get_internal_object_params(82, "forums.forum")
    assert forum is not None and (forum.code_name, forum.group_id) == ("help-desk", 71)
    doc = connector.get_internal_document_params(303, "cms.folder")
    assert doc is not None and doc.site_name == "main"


def test_demo_runs_and_reports(bus: IntegrationBus) -> None:
    console, out = _console()
    report = run_demo(bus, console)
    assert report == DemoReport(logged=105, rejected=1, applied=103, failed=2, remaining=1)

    # Everything but the planned problems was applied.
    assert len(bus.find_objects("cms.user")) == 19
    assert len(bus.find_objects("cms.role")) == 5
    assert len(bus.find_objects("cms.userrole")) == 29
    assert len(bus.find_objects("community.group")) == 2
    assert len(bus.find_objects("forums.forum")) == 3
    assert len(bus.find_objects("forums.forumpost")) == 24

    emma = bus.get_object("cms.user", "emma.silva")
    assert emma is not None and emma["email"] == "emma.silva@newmail.example"
    assert bus.get_object("cms.user", "tom.leaver") is None
    sales = bus.get_object("cms.role", "sales", site_name="main")
    assert sales is not None
    assert len(bus.find_objects("cms.userrole", role_id=sales["role_id"])) == 6

    # A reply is linked to its thread's first post, in the right forum, by the right author.
    reply = bus.get_object("forums.forumpost", _post_guid(9004))
    first = bus.get_object("forums.forumpost", _post_guid(9002))
    forum = bus.get_object("forums.forum", "announcements", site_name="main")
    author = bus.get_object("cms.user", "chloe.martin")
    assert reply is not None and first is not None and forum is not None and author is not None
    assert reply["post_parent_id"] == first["post_id"]
    assert reply["forum_id"] == forum["forum_id"]
    assert reply["post_user_id"] == author["user_id"]

    # Pages: the moved article, the edited one, the archived one.
    moved = bus.get_page("main", "/guides/getting-started-api")
    assert moved is not None and moved["node_class_name"] == "cms.article"
    assert bus.get_page("main", "/blog/getting-started-api") is None
    edited = bus.get_page("main", "/news/partner-programme")
    assert edited is not None and "three new tiers" in edited["article_text"]
    archived = bus.get_page("main", "/blog/hiring-process")
    assert archived is not None and archived["archived"] and not archived["published"]
    assert bus.get_page("main", "/drafts") is None

    # The article under the never-sent folder waits, with a reason.
    (waiting,) = bus.list_tasks(CONNECTOR)
    assert waiting.process_type is ProcessType.SKIP_ON_ERROR
    assert waiting.error_message
    assert bus.task_log(waiting.task_id)

    # The post whose author was deleted went to the event log.
    events = [e.message for e in bus.event_log()]
    assert any("Cannot translate columns" in m and "post_user_id" in m for m in events)

    text = out.getvalue()
    for title in ("Content repository", "Failed or waiting tasks", "Event log"):
        assert title in text
    assert "Rejected at log time" in text and "TranslationError" in text and "role_id" in text


def test_demo_is_rerunnable(bus: IntegrationBus) -> None:
    clock = Clock(bus)
    console, _ = _console()
    run_demo(bus, console)
    console, out = _console()
    again = run_demo(bus, console)
    # Nothing new is logged; the membership is refused again; the waiting article (SkipOnError)
    # is backing off: not tried again yet.
    assert again == DemoReport(logged=0, rejected=1, applied=0, failed=0, remaining=1)
    assert "in 10 s" in out.getvalue() or "in 11 s" in out.getvalue()  # its next try
    clock.advance(11)
    console, out = _console()
    later = run_demo(bus, console)  # its back-off has passed: tried again, fails again
    assert later == DemoReport(logged=0, rejected=1, applied=0, failed=1, remaining=1)
    assert len(bus.find_objects("cms.user")) == 19
    assert len(bus.find_objects("forums.forumpost")) == 24
    assert "Content repository" in out.getvalue()


def test_new_hires_are_sent_membership_first() -> None:
    labels = [t.label for t in new_hire_tasks(load_crm_data())]
    assert labels == ["CreateObject membership 31", "CreateObject user 1021"]
    # The same connector, with entity lanes; the strict one is unchanged.
    assert CrmEntityConnector.ordering is Ordering.ENTITY
    assert CrmConnector.ordering is Ordering.CONNECTOR
    user = CrmEntityConnector().get_internal_object_params(1021, "cms.user")
    assert user is not None and user.code_name == "uma.becker"


def test_entity_part_waits_for_the_user_then_applies(bus: IntegrationBus) -> None:
    run_demo(bus, _console()[0])
    assert bus.get_object("cms.user", "uma.becker") is None  # the CONNECTOR part never sends her
    console, out = _console()
    report = run_entity_demo(bus, console)
    assert report == EntityDemoReport(waited_for=("cms.user 'uma.becker'",), applied=2, remaining=0)

    user = bus.get_object("cms.user", "uma.becker")
    support = bus.get_object("cms.role", "support", site_name="main")
    assert user is not None and support is not None
    assert bus.find_objects("cms.userrole", user_id=user["user_id"], role_id=support["role_id"])
    assert bus.list_tasks(ENTITY_CONNECTOR) == []
    # The CONNECTOR part's queue is as run_demo left it.
    assert len(bus.list_tasks(CONNECTOR)) == 1

    text = " ".join(out.getvalue().split())
    assert "ordering = Ordering.ENTITY" in text
    assert "CreateObject membership 31 (task" in text
    assert "WAITS for cms.user 'uma.becker' (no error logged)" in text
    assert "lane cms.userrole/(cms.role/support@main,cms.user/uma.becker)" in text
    assert "applied 2 (the user, then the waiting membership)" in text
    assert "uma.becker has role support: yes" in text


def test_entity_part_is_rerunnable(bus: IntegrationBus) -> None:
    run_demo(bus, _console()[0])
    run_entity_demo(bus, _console()[0])
    console, out = _console()
    again = run_entity_demo(bus, console)
    assert again == EntityDemoReport(waited_for=(), applied=0, remaining=0)
    text = " ".join(out.getvalue().split())
    assert "applied by an earlier run of the demo, nothing waits" in text
    assert "uma.becker has role support: yes" in text


def test_syncbus_demo_runs_both_parts(db_url: str) -> None:
    from typer.testing import CliRunner

    from syncbus.cli import app

    result = CliRunner().invoke(app, ["demo", "--db", db_url])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "logged 105, rejected at log time 1, applied 103, failed 2, still queued 1" in text
    assert "WAITS for cms.user 'uma.becker'" in text
    assert "uma.becker has role support: yes" in text
    assert "CrmEntityConnector: waited 1, still queued 0" in text


def _post_guid(post_id: int) -> str:
    post = next(p for p in load_crm_data()["posts"] if p["id"] == post_id)
    return str(post["guid"])
