"""The sample CRM integration, end to end, on each backend."""

from __future__ import annotations

import io

from rich.console import Console

from syncbus import IntegrationBus, ProcessType
from syncbus.examples.crm.connector import CrmConnector, load_crm_data
from syncbus.examples.crm.demo import CONNECTOR, DemoReport, run_demo
from syncbus.examples.crm.feed import crm_tasks


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
    console, _ = _console()
    run_demo(bus, console)
    console, out = _console()
    again = run_demo(bus, console)
    # Nothing new is logged; the membership is refused again; the waiting article fails again.
    assert again == DemoReport(logged=0, rejected=1, applied=0, failed=1, remaining=1)
    assert len(bus.find_objects("cms.user")) == 19
    assert len(bus.find_objects("forums.forumpost")) == 24
    assert "Content repository" in out.getvalue()


def _post_guid(post_id: int) -> str:
    post = next(p for p in load_crm_data()["posts"] if p["id"] == post_id)
    return str(post["guid"])
