"""A failed task whose missing reference is created by a task queued BEHIND it in the same
connector: the read side names that task ("the fix is task N, queued behind this one:
synchronize task N first, then this one"), in the admin's task page and blocker banner and in
``GET /api/tasks/{id}``; and that order works. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from syncbus import (
    IntegrationBus,
    Page,
    ProcessType,
    TaskDataType,
    TaskType,
    create_app,
)
from syncbus.readmodel import blockers, task_detail, with_hint
from tests.helpers import DictConnector
from tests.http_server import asgi_client

TOKEN = "hint-s3cret"
FOLDER_GUID = "8a3c5cb6-1f0e-4f6b-9d7e-2b9f0c4e7a11"


@pytest.fixture
def hr(bus: IntegrationBus) -> Iterator[DictConnector]:
    """An HR connector: user 7 is "ada", role 3 is "editors" on site main."""
    conn = DictConnector("Hr")
    conn.knows("cms.user", 7, "ada")
    conn.knows("cms.role", 3, "editors", site="main")
    conn.knows_page(309, FOLDER_GUID)
    bus.register_connector(conn)
    yield conn


def log(bus: IntegrationBus, obj: object, **kw: object) -> int:
    task_id = bus.process_external_task("Hr", obj, **kw)  # type: ignore[arg-type]
    assert task_id is not None
    return task_id


def user_ada() -> dict[str, object]:
    return {"type": "cms.user", "data": {"user_name": "ada", "email": "ada@example.com"}}


def failed_membership(bus: IntegrationBus) -> int:
    """The role exists; the membership of user 7 fails (the user is missing) and blocks."""
    log(bus, {"type": "cms.role", "data": {"role_name": "editors"}}, site_name="main")
    membership = log(
        bus,
        {"type": "cms.userrole", "data": {"user_id": 7, "role_id": 3}},
        data_type=TaskDataType.SIMPLE_SNAPSHOT,
    )
    result = bus.process_tasks("Hr")["Hr"]
    assert (result.applied, result.failed, result.stopped) == (1, 1, True), result
    return membership


def expected(fix: int) -> str:
    return (
        f"The fix is task {fix}, queued behind this one: "
        f"synchronize task {fix} first, then this one"
    )


def test_the_hint_names_the_user_task_and_that_order_works(
    bus: IntegrationBus, hr: DictConnector
) -> None:
    membership = failed_membership(bus)
    user = log(bus, user_ada())  # the documented fix, through the same connector: behind
    assert bus.process_tasks("Hr")["Hr"].applied == 0  # the blocker holds it back

    detail = task_detail(bus, membership)
    assert detail is not None and detail.info.hint is not None
    assert expected(user) in detail.info.hint
    assert "creates cms.user 'ada'" in detail.info.hint
    [blocker] = blockers(bus, "Hr")
    assert blocker.hint == detail.info.hint
    info = bus.get_task(membership)
    assert info is not None and with_hint(bus, info).hint == detail.info.hint
    assert task_detail(bus, user).info.hint is None  # type: ignore[union-attr]

    # The working order: the fix first, then the failed task.
    assert bus.synchronize_task(user) is True
    assert bus.synchronize_task(membership) is True
    ada = bus.get_object("cms.user", "ada")
    role = bus.get_object("cms.role", "editors", site_name="main")
    assert ada is not None and role is not None
    assert bus.find_objects("cms.userrole", user_id=ada["user_id"], role_id=role["role_id"])
    assert bus.list_tasks() == []


def test_the_admin_pages_show_the_hint(bus: IntegrationBus, hr: DictConnector) -> None:
    membership = failed_membership(bus)
    user = log(bus, user_ada())
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app) as client:
        signed = client.post(
            "/admin/signin", data={"token": TOKEN, "name": "Olivia", "next": "/admin/"}
        )
        assert signed.status_code in (200, 303), signed.text
        task_page = client.get(f"/admin/tasks/{membership}").text
        dashboard = client.get("/admin/").text
        task_list = client.get("/admin/tasks").text
    for html in (task_page, dashboard, task_list):
        assert 'data-testid="fix-hint"' in html
        assert expected(user) in html


def test_the_api_answers_the_hint(bus: IntegrationBus, hr: DictConnector) -> None:
    membership = failed_membership(bus)
    user = log(bus, user_ada())
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app) as client:
        answer = client.get(
            f"/api/tasks/{membership}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
    assert answer.status_code == 200
    assert expected(user) in (answer.json().get("hint") or "")


def test_a_missing_parent_page_queued_behind_is_named(
    bus: IntegrationBus, hr: DictConnector
) -> None:
    article = log(
        bus,
        Page("cms.article", "Pricing", parent_id=309, fields={"article_title": "Pricing"}),
        task_type=TaskType.CREATE_DOCUMENT,
        data_type=TaskDataType.SIMPLE_SNAPSHOT,
        site_name="main",
    )
    assert bus.process_tasks("Hr")["Hr"].stopped
    folder = log(
        bus,
        Page("cms.folder", "Drafts", node_guid=FOLDER_GUID.upper()),
        task_type=TaskType.CREATE_DOCUMENT,
        site_name="main",
    )
    detail = task_detail(bus, article)
    assert detail is not None and detail.info.hint is not None
    assert expected(folder) in detail.info.hint
    # The operator knows the page by its name; the GUID is there to tell two of a name apart.
    assert f"task {folder} creates the page 'Drafts' (node GUID '{FOLDER_GUID}')" in (
        detail.info.hint
    ), detail.info.hint
    assert bus.synchronize_task(folder) is True
    assert bus.synchronize_task(article) is True
    assert bus.get_page("main", "/Drafts/Pricing") is not None


def test_no_hint_when_the_fix_is_not_queued_in_the_same_connector(
    bus: IntegrationBus, hr: DictConnector
) -> None:
    membership = failed_membership(bus)
    other = DictConnector("Other")
    bus.register_connector(other)
    bus.process_external_task("Other", user_ada())  # another connector: its own queue
    log(  # same connector, same user name, but a role: not the missing reference
        bus, {"type": "cms.role", "data": {"role_name": "ada"}}, site_name="main"
    )
    detail = task_detail(bus, membership)
    assert detail is not None and detail.info.hint is None
    assert blockers(bus, "Hr")[0].hint is None
    # The other connector's run creates the user; now the synchronize alone fixes it.
    assert bus.process_tasks("Other")["Other"].applied == 1
    assert bus.synchronize_task(membership) is True


def test_a_role_on_another_site_is_not_the_fix(bus: IntegrationBus, hr: DictConnector) -> None:
    bus.create_site("intranet")
    log(bus, user_ada())
    membership = log(
        bus,
        {"type": "cms.userrole", "data": {"user_id": 7, "role_id": 3}},
        data_type=TaskDataType.SIMPLE_SNAPSHOT,
        process_type=ProcessType.DEFAULT,
    )
    assert bus.process_tasks("Hr")["Hr"].stopped  # role "editors" on main is missing
    log(bus, {"type": "cms.role", "data": {"role_name": "editors"}}, site_name="intranet")
    assert task_detail(bus, membership).info.hint is None  # type: ignore[union-attr]
    fix = log(bus, {"type": "cms.role", "data": {"role_name": "editors"}}, site_name="main")
    assert expected(fix) in (task_detail(bus, membership).info.hint or "")  # type: ignore[union-attr]


def test_a_child_of_a_snapshot_queued_behind_is_named(
    bus: IntegrationBus, hr: DictConnector
) -> None:
    post_guid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    hr.knows("forums.forum", 50, "help", site="main")
    hr.knows("forums.forumpost", 900, post_guid, parent_id=50)
    forum = {"type": "forums.forum", "data": {"forum_name": "help"}}
    log(bus, forum, site_name="main")
    reply = {
        "type": "forums.forumpost",
        "data": {
            "post_guid": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "forum_id": 50,
            "post_parent_id": 900,  # the post it answers is not there yet
            "post_subject": "Re: hello",
        },
    }
    failed = log(bus, reply, data_type=TaskDataType.SIMPLE_SNAPSHOT)
    assert bus.process_tasks("Hr")["Hr"].stopped
    snapshot = {
        "type": "forums.forum",
        "data": {"forum_name": "help"},
        "children": [{"type": "forums.forumpost", "data": {"post_guid": post_guid}}],
    }
    fix = log(
        bus,
        snapshot,
        task_type=TaskType.UPDATE_OBJECT,
        data_type=TaskDataType.SNAPSHOT,
        site_name="main",
    )
    hint = task_detail(bus, failed).info.hint  # type: ignore[union-attr]
    assert hint is not None and expected(fix) in hint
    assert f"creates forums.forumpost '{post_guid}'" in hint
    assert bus.synchronize_task(fix) is True
    assert bus.synchronize_task(failed) is True


def test_tasks_show_prints_the_hint(db_url: str, bus: IntegrationBus, hr: DictConnector) -> None:
    from typer.testing import CliRunner

    from syncbus.cli import app

    membership = failed_membership(bus)
    user = log(bus, user_ada())
    result = CliRunner().invoke(app, ["tasks", "show", str(membership), "--db", db_url])
    assert result.exit_code == 0, result.output
    assert expected(user) in " ".join(result.output.split())


def test_tasks_sync_of_a_blocked_task_repeats_the_hint_and_show_gives_the_external_object(
    db_url: str, bus: IntegrationBus, hr: DictConnector
) -> None:
    """``tasks sync`` of the failed membership, its fix still queued behind it, fails (exit
    1) and says which task to synchronize first, as ``tasks show`` does; ``tasks show`` of a
    queued task prints its external object as logged (what ``tasks replace`` takes, edited)
    apart from the stored internal data."""
    from typer.testing import CliRunner

    from syncbus.cli import app

    membership = failed_membership(bus)
    user = log(bus, user_ada())
    result = CliRunner().invoke(app, ["tasks", "sync", str(membership), "--db", db_url])
    assert result.exit_code == 1, result.output
    assert expected(user) in " ".join(result.output.split())
    shown = CliRunner().invoke(app, ["tasks", "show", str(membership), "--db", db_url])
    assert shown.exit_code == 0, shown.output
    text = shown.output
    external = text.index("external object (as logged)")
    stored = text.index("data (as stored")
    assert external < stored
    between = text[external:stored]
    assert '"user_id": 7' in between and '"role_id": 3' in between
