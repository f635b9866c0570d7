"""`GET /api/pages/{site}/{alias_path}` and `syncbus pages show`: a page as it is now, over HTTP
and from the command line (a new user's trial could read pages back only from Python). Bad
reads are clear 4xx answers; a page asked for in a culture it lacks names those it has. On
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from syncbus import IntegrationBus, Page, TaskType, create_app
from tests.helpers import add_connector, put
from tests.http_server import asgi_client
from tests.service.test_history_cli import cli, one_line_error

CREATE = TaskType.CREATE_DOCUMENT


@pytest.fixture
def api(bus: IntegrationBus) -> Iterator[httpx.Client]:
    add_connector(bus)
    guid = str(uuid.uuid4())
    put(bus, Page("cms.folder", "News", alias="news"), CREATE)
    fields = {"article_title": "Hello", "article_summary": "sum", "article_text": "text"}
    hello = Page("cms.article", "Hello", alias="hello", node_guid=guid, parent_path="/news")
    put(bus, Page(**{**hello.__dict__, "fields": fields}), CREATE)
    put(
        bus,
        Page(**{**hello.__dict__, "culture": "de-DE", "name": "Hallo", "fields": fields}),
        CREATE,
    )
    with asgi_client(create_app(bus, run_dispatcher=False, no_auth=True)) as client:
        yield client


def test_a_page_reads_back_as_it_is_now(bus: IntegrationBus, api: httpx.Client) -> None:
    r = api.get("/api/pages/main/news/hello")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["site_name"], body["alias_path"], body["culture"]) == (
        "main",
        "/news/hello",
        "en-US",
    )
    page = body["page"]
    expected = bus.get_page("main", "/news/hello")
    assert expected is not None
    assert page["node_guid"] == str(expected["node_guid"])
    assert page["document_name"] == "Hello" and page["article_title"] == "Hello"
    assert page["node_class_name"] == "cms.article"
    german = api.get("/api/pages/main/news/hello", params={"culture": "de-DE"}).json()
    assert german["page"]["document_name"] == "Hallo" and german["culture"] == "de-DE"
    # The empty path is the root, which a site has as a node without a document: a 404 naming
    # the path, as the Python API's None.
    assert bus.get_page("main", "/") is None
    root = api.get("/api/pages/main/")
    assert root.status_code == 404 and "no page '/' on site 'main'" in root.text
    assert "the root of a site's tree is a node without a document" in root.text
    # A culture in another case is the same culture; repeated slashes are one.
    lower = api.get("/api/pages/main//news//hello/", params={"culture": "de-de"})
    assert lower.status_code == 200, lower.text
    assert lower.json()["culture"] == "de-DE" and lower.json()["page"]["document_name"] == "Hallo"


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/api/pages/main/news/gone", 404, "no page '/news/gone' on site 'main'"),
        ("/api/pages/main/news/hello?culture=fr-FR", 404, "it is in 'de-DE', 'en-US'"),
        ("/api/pages/main/news/gone" + "/x" * 2000, 404, "no page '/news/gone/x/x/x/x/x/x/x/x/x/x"),
        ("/api/pages/nowhere/news", 422, "site 'nowhere' not found"),
        ("/api/pages/main/news?culture=", 422, "culture"),
        # Logging refuses it: reading it is no "page not in that culture" either.
        ("/api/pages/main/news/hello?culture=en_US", 422, "culture 'en_US' is no culture code"),
    ],
)
def test_bad_page_reads_are_clear(api: httpx.Client, path: str, status: int, says: str) -> None:
    r = api.get(path)
    assert r.status_code == status, r.text
    assert says in r.text
    assert len(r.text) < 400  # a long path is shortened in the answer, not echoed whole


def test_the_command_line_shows_a_page_as_the_api_does(
    bus: IntegrationBus, api: httpx.Client, db_url: str
) -> None:
    shown = cli(db_url, "pages", "show", "main", "/news/hello", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == api.get("/api/pages/main/news/hello").json()
    table = cli(db_url, "pages", "show", "main", "news/hello", "--culture", "de-DE")
    assert table.exit_code == 0 and '"Hallo"' in table.stdout
    lacks = cli(db_url, "pages", "show", "main", "/news/hello", "--culture", "fr-FR")
    assert "it is in 'de-DE', 'en-US'" in one_line_error(lacks)
    malformed = one_line_error(
        cli(db_url, "pages", "show", "main", "/news/hello", "--culture", "x")
    )
    assert "culture 'x' is no culture code" in malformed
    blank = one_line_error(cli(db_url, "pages", "show", "main", "/news/hello", "--culture", " "))
    assert "a page is read in a culture" in blank
    assert "site 'elsewhere' not found" in one_line_error(
        cli(db_url, "pages", "show", "elsewhere", "/news")
    )


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        # A line break in the path: Starlette's ``path`` parameter stops at one, so such a path
        # matched no route and got the framework's bare "Not Found".
        ("/api/pages/main/news%0Ahello", 404, "no page '/news\\nhello' on site 'main'"),
        ("/api/objects/cms.user/a%0Ab", 404, "'a\\nb'"),
        ("/api/objects/cms.user/a%0Ab/history", 200, ""),
        # A byte that is not UTF-8, in the path or the query: the server would read it as
        # U+FFFD and look for that. Refused for every route, naming the byte.
        ("/api/pages/main/news/h%FFllo", 422, "the URL path is not UTF-8 text"),
        ("/api/objects/cms.user/al%C3ice", 422, "byte(s) C3"),
        ("/api/objects/cms.user/al%E9/history", 422, "byte(s) E9"),
        ("/api/objects/cms.user?code_name=Jos%E9", 422, "query parameter 'code_name'"),
        ("/api/pages/main/news?culture=%E9", 422, "query parameter 'culture'"),
        ("/api/tasks?lane=cms.user%2FJos%E9", 422, "query parameter 'lane'"),
        ("/api/tasks?l%E9ne=x", 422, "byte(s) E9"),
    ],
)
def test_paths_with_any_text_get_our_answer(
    api: httpx.Client, path: str, status: int, says: str
) -> None:
    r = api.get(path)
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json() == {"records": []}
    else:
        detail = r.json()["detail"]
        text = detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)
        assert says in text, r.text
    # UTF-8 escapes of other characters are text like any other: read, not refused.
    assert api.get("/api/pages/main/news/h%C3%A9llo").status_code == 404
    assert api.get("/api/objects/cms.user?code_name=Jos%C3%A9").status_code == 404


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@example(raw=b"\xe9")  # Latin-1's e-acute alone
@example(raw=b"\xc3")  # a UTF-8 sequence cut short
@example(raw=b"caf\xc3\xa9\n")
@example(raw=b"\x00")
@given(raw=st.binary(min_size=1, max_size=12))
def test_any_bytes_escaped_into_a_read_get_a_clear_answer(api: httpx.Client, raw: bytes) -> None:
    """Any bytes, percent-encoded into an object or page read's path or query: an answer of
    ours (found, not found, or refused naming the problem), never a server error, a bare
    framework 404 or a U+FFFD read as a name."""
    escaped = "".join(f"%{b:02X}" for b in raw)
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    for url in (
        f"/api/objects/cms.user/{escaped}",
        f"/api/objects/cms.user?code_name={escaped}",
        f"/api/pages/main/news/{escaped}",
        f"/api/pages/main/news?culture={escaped}",
    ):
        r = api.get(url)
        assert r.status_code in (200, 404, 422), (url, r.status_code, r.text)
        detail = json.dumps(r.json().get("detail"), ensure_ascii=False)
        assert detail != '"Not Found"', (url, r.text)  # the framework's, not ours
        if text is None:
            assert r.status_code == 422 and "not UTF-8 text" in detail, (url, r.text)
            continue
        if "\x00" in text:
            assert r.status_code == 422, (url, r.text)
        # Text that is UTF-8 is read as sent: never a U+FFFD it did not hold.
        assert "\ufffd" not in detail or "\ufffd" in text, (url, r.text)
