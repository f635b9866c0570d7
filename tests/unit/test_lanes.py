"""Lane keys (syncbus.content.lanes): one per built-in kind of identity, escaping, long keys,
and, with hypothesis, that distinct identities never share a key."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncbus import InternalObject, ObjectType, Page
from syncbus.content.builtin import BUILTIN_OBJECT_TYPES
from syncbus.content.lanes import lane_of
from syncbus.content.paths import join_path, normalize_path
from syncbus.payload import PAGE_RECORD, Payload, TranslationRecord
from syncbus.store.enqueue import LANE_MAX

CUSTOM = ObjectType(  # a user-defined type whose name needs escaping, GUID-identified
    "my/odd@type", "my_odd", "odd_id", guid_column="odd_guid", site_column="site_id"
)
TYPES = {t.name: t for t in (*BUILTIN_OBJECT_TYPES, CUSTOM)}


def types(name: str) -> ObjectType:
    return TYPES[name.lower()]


def obj_lane(
    object_type: str,
    data: dict[str, Any],
    site: str | None = "main",
    records: list[TranslationRecord] | None = None,
) -> str:
    payload = Payload(obj=InternalObject(object_type, data), records=records or [])
    return lane_of(payload, site, types)


def page_lane(
    page: Page, site: str = "main", records: list[TranslationRecord] | None = None
) -> str:
    return lane_of(Payload(page=page, records=records or []), site, types)


# -- one example per kind --------------------------------------------------------------------
def test_a_global_type_is_its_type_and_code_name() -> None:
    assert obj_lane("cms.user", {"user_name": "alice", "email": "a@x"}) == "cms.user/alice"
    # the task's site does not matter for a global type
    assert obj_lane("cms.user", {"user_name": "alice"}, site="other") == "cms.user/alice"
    assert obj_lane("cms.user", {"user_name": "alice"}, site=None) == "cms.user/alice"
    assert obj_lane("cms.site", {"site_name": "main"}) == "cms.site/main"


def test_the_type_name_is_the_declared_lower_case_one() -> None:
    assert obj_lane("CMS.User", {"user_name": "alice"}) == "cms.user/alice"


def test_a_site_bound_type_adds_the_site() -> None:
    assert obj_lane("cms.role", {"role_name": "admin"}) == "cms.role/admin@main"
    assert obj_lane("cms.role", {"role_name": "admin"}, site="b") == "cms.role/admin@b"
    assert obj_lane("community.group", {"group_name": "g"}) == "community.group/g@main"


def test_parent_and_group_are_not_part_of_the_key() -> None:
    assert obj_lane("forums.forum", {"forum_name": "f", "forum_group_id": 7}) == (
        "forums.forum/f@main"
    )
    assert obj_lane("forums.forum", {"forum_name": "f"}) == "forums.forum/f@main"


def test_a_guid_identified_type_is_its_guid() -> None:
    guid = uuid.UUID("6f1c0000-0000-4000-8000-0000000000aa")
    data = {"post_guid": guid, "forum_id": 3, "post_subject": "hi"}
    assert obj_lane("forums.forumpost", data) == f"forums.forumpost/{guid}"
    assert obj_lane("forums.forumpost", {"post_guid": str(guid)}) == f"forums.forumpost/{guid}"
    assert obj_lane("forums.forumpost", {"post_subject": "new"}) == "forums.forumpost/?"
    assert obj_lane("my/odd@type", {"odd_guid": "g"}, site="s") == "my%2Fodd%40type/g@s"


def test_a_binding_under_simple_names_its_ends_by_internal_id() -> None:
    lane = obj_lane("cms.userrole", {"user_id": 12, "role_id": 3})
    assert lane == "cms.userrole/(cms.role#3,cms.user#12)"
    assert obj_lane("cms.usersite", {"user_id": 12, "site_id": 1}) == (
        "cms.usersite/(cms.site#1,cms.user#12)"
    )


def test_a_binding_with_translation_names_its_ends_by_identity() -> None:
    records = [
        TranslationRecord("cms.user", "u7", "alice"),
        TranslationRecord("cms.role", 3, "admin", None),  # the task's site
    ]
    lane = obj_lane("cms.userrole", {"user_id": "u7", "role_id": 3}, records=records)
    assert lane == "cms.userrole/(cms.role/admin@main,cms.user/alice)"
    # an end's own site, when the connector named one
    records[1] = TranslationRecord("cms.role", 3, "admin", "other")
    lane = obj_lane("cms.userrole", {"user_id": "u7", "role_id": 3}, records=records)
    assert lane == "cms.userrole/(cms.role/admin@other,cms.user/alice)"
    # the end's key is the key of that entity's own lane
    assert lane.split("(")[1].split(",")[1] == obj_lane("cms.user", {"user_name": "alice"}) + ")"


def test_pages_by_node_guid() -> None:
    guid = "0B1E0000-0000-4000-8000-000000000001"
    page = Page("cms.article", "Hello", node_guid=guid, parent_path="/news")
    assert page_lane(page) == f"page@main/{guid.lower()}"
    assert page_lane(Page("cms.folder", "x", culture="de-DE", node_guid=guid)) == (
        f"page@main/{guid.lower()}"
    )
    assert page_lane(page, site="b") == f"page@b/{guid.lower()}"


def test_pages_without_a_node_guid_by_alias_path() -> None:
    assert page_lane(Page("cms.article", "Hello world!", parent_path="/news/")) == (
        "page@main:/news/Hello-world"
    )
    assert page_lane(Page("cms.article", "x", alias="hello", parent_path="/news")) == (
        "page@main:/news/hello"
    )
    assert page_lane(Page("cms.folder", "Top")) == "page@main:/Top"
    assert page_lane(Page("cms.folder", "x", alias="50%")) == "page@main:/50%25"


def test_pages_under_a_parent_given_by_id() -> None:
    assert page_lane(Page("cms.article", "x", alias="a", parent_id=12)) == "page@main:{#12}/a"
    records = [TranslationRecord(PAGE_RECORD, "ext-1", "0b1e", "main", culture="en-US")]
    page = Page("cms.article", "x", alias="a", parent_id="ext-1")
    assert page_lane(page, records=records) == "page@main:{0b1e}/a"


def test_structure_characters_in_names_are_escaped() -> None:
    assert obj_lane("cms.user", {"user_name": "a/b@c(d),e:f#g?h%i"}) == (
        "cms.user/a%2Fb%40c%28d%29%2Ce%3Af%23g%3Fh%25i"
    )
    assert obj_lane("cms.user", {"user_name": "tab\there\x7f"}) == "cms.user/tab%09here%7F"
    # Unicode and spaces stay readable
    assert obj_lane("cms.user", {"user_name": "Zoë 漢字"}) == "cms.user/Zoë 漢字"
    assert obj_lane("cms.role", {"role_name": "r"}, site="s@t") == "cms.role/r@s%40t"


def test_long_keys_are_shortened_with_a_digest() -> None:
    short = obj_lane("cms.user", {"user_name": "a" * (LANE_MAX - 9)})
    assert len(short) == LANE_MAX and "%%" not in short
    long_a = obj_lane("cms.user", {"user_name": "a" * 5000})
    long_b = obj_lane("cms.user", {"user_name": "a" * 4999 + "b"})
    assert len(long_a) <= LANE_MAX and long_a.startswith("cms.user/aaa") and "%%" in long_a
    assert long_a != long_b
    assert long_a == obj_lane("cms.user", {"user_name": "a" * 5000})  # stable


# -- distinct identities, distinct keys --------------------------------------------------------
# Names full of the characters that structure a key, Unicode, controls; sometimes very long.
_TRICKY = st.sampled_from([*"/@(),:#?%{}~ \t\x00\x01aAé漢-_.", "%2F", "%%", "#1", "(a,b)"])
_NAMES = st.one_of(
    st.lists(_TRICKY, min_size=1, max_size=12).map("".join),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30),
    st.tuples(st.text("ab/@", min_size=1, max_size=3), st.integers(380, 900)).map(
        lambda t: t[0] * t[1]
    ),
)
_SITES = st.sampled_from(["main", "b", "s@t", "m/a", ""]) | _NAMES


def _plain() -> st.SearchStrategy[tuple[Any, str]]:
    """(identity, lane) of an object of a plain type."""

    def build(type_name: str, key: str, site: str) -> tuple[Any, str]:
        ot = TYPES[type_name]
        identity = ("object", type_name, key, site if ot.site_column else None)
        return identity, obj_lane(type_name, {str(ot.key_column): key}, site=site)

    kinds = st.sampled_from(["cms.user", "cms.role", "forums.forumpost", "my/odd@type"])
    return st.builds(build, kinds, _NAMES, _SITES)


def _binding() -> st.SearchStrategy[tuple[Any, str]]:
    def build(user: str, role: str, role_site: str, site: str) -> tuple[Any, str]:
        records = [
            TranslationRecord("cms.user", 1, user),
            TranslationRecord("cms.role", 2, role, role_site or None),
        ]
        identity = ("binding", user, role, role_site or site)
        return identity, obj_lane("cms.userrole", {"user_id": 1, "role_id": 2}, site, records)

    return st.builds(build, _NAMES, _NAMES, st.sampled_from(["", "x"]) | _SITES, _SITES)


def _page() -> st.SearchStrategy[tuple[Any, str]]:
    def by_guid(site: str, guid: str) -> tuple[Any, str]:
        return ("page", site, guid.lower()), page_lane(Page("c", "n", node_guid=guid), site)

    def by_path(site: str, parents: list[str], alias: str) -> tuple[Any, str]:
        parent_path = "/" + "/".join(parents)
        path = join_path(normalize_path(parent_path), alias)
        page = Page("c", "n", alias=alias, parent_path=parent_path)
        return ("path", site, path), page_lane(page, site)

    segment = _NAMES.map(lambda s: s.replace("/", "_").strip()).filter(bool)
    return st.one_of(
        st.builds(by_guid, _SITES, _NAMES),
        st.builds(by_path, _SITES, st.lists(segment, max_size=3), segment),
    )


_ENTITIES = st.one_of(_plain(), _binding(), _page())


@settings(max_examples=400, deadline=None)
@given(st.lists(_ENTITIES, min_size=2, max_size=8))
def test_distinct_identities_never_share_a_lane(entities: list[tuple[Any, str]]) -> None:
    seen: dict[str, Any] = {}
    for identity, lane in entities:
        assert len(lane) <= LANE_MAX
        assert seen.setdefault(lane, identity) == identity, (lane, seen[lane], identity)


@settings(max_examples=200, deadline=None)
@given(_NAMES, _NAMES)
def test_two_code_names_share_a_lane_only_when_equal(a: str, b: str) -> None:
    lane_a = obj_lane("cms.user", {"user_name": a})
    lane_b = obj_lane("cms.user", {"user_name": b})
    assert (lane_a == lane_b) == (a == b)
    assert lane_a == obj_lane("cms.user", {"user_name": a})  # stable
    if len(lane_a) < LANE_MAX:
        assert "%%" not in lane_a  # exact keys never look shortened
