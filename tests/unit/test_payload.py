"""Translation-record keys: equal external ids share a key, different ones never do."""

from __future__ import annotations

import enum
import json

from hypothesis import given
from hypothesis import strategies as st

from syncbus.payload import id_key

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.lists(st.one_of(st.integers(), st.text()), max_size=3),
)


class Colour(enum.StrEnum):
    ODD = 'a"b\\c'


class Level(enum.IntEnum):
    HIGH = 3


@given(scalars, scalars)
def test_keys_differ_exactly_when_the_stored_json_differs(a: object, b: object) -> None:
    # A record's external id is stored as JSON: two ids are the same id when their JSON is.
    same = json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert (id_key("t", a) == id_key("t", b)) is same


@given(st.one_of(st.integers(), st.text()))
def test_a_key_survives_the_json_round_trip(value: object) -> None:
    assert id_key("t", json.loads(json.dumps(value))) == id_key("t", value)


def test_enum_members_key_as_their_values() -> None:
    assert id_key("t", Colour.ODD) == id_key("t", 'a"b\\c')
    assert id_key("t", Level.HIGH) == id_key("t", 3)
    assert id_key("t", True) != id_key("t", 1)
    assert id_key("t", "1") != id_key("t", 1)
    assert id_key("t", 1) != id_key("u", 1)
