"""MQTT topic matching and validation: the spec's examples, then properties."""

from __future__ import annotations

import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st

from i24net.core.errors import TransportError
from i24net.transport.topics import (
    MAX_TOPIC_BYTES,
    topic_matches,
    validate_filter,
    validate_topic,
)

# (filter, topic, matches) - the examples of MQTT 3.1.1 section 4.7 plus edge cases.
MATCH_TABLE = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "finance", True),
    ("+/tennis/#", "sport/tennis", True),
    ("sport/+/player1", "sport/tennis/player1", True),
    ("sport/tennis", "sport/tennis", True),
    ("sport/tennis", "sport/Tennis", False),
    ("sport/tennis", "sport/tennis/", False),
    ("sport/tennis/", "sport/tennis", False),
    ("a//b", "a//b", True),
    ("a/+/b", "a//b", True),
    ("i24/v1/inbox/+", "i24/v1/inbox/FR", True),
    ("i24/v1/inbox/FR", "i24/v1/inbox/FRA", False),
    # Topics starting with '$' are not matched by a leading wildcard (section 4.7.2).
    ("#", "$SYS/broker/uptime", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("a/#", "a/$b", True),
    ("+/$b", "a/$b", True),
]


@pytest.mark.parametrize(("filter_", "topic", "expected"), MATCH_TABLE)
def test_topic_matches_table(filter_: str, topic: str, expected: bool) -> None:
    assert topic_matches(filter_, topic) is expected


@pytest.mark.parametrize(("filter_", "topic", "expected"), MATCH_TABLE)
def test_table_agrees_with_paho(filter_: str, topic: str, expected: bool) -> None:
    # Guards the table itself: an independent implementation reads the spec the same way.
    assert paho.topic_matches_sub(filter_, topic) is expected


@pytest.mark.parametrize("topic", ["a", "a/b", "/", "a//b", "$SYS/x", "i24/v1/submit/FR", "é/ü"])
def test_valid_topics(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    "topic", ["", "a/+", "a/#", "+", "#", "a/b+", "x\x00y", "\ud800", "a" * (MAX_TOPIC_BYTES + 1)]
)
def test_invalid_topics(topic: str) -> None:
    with pytest.raises(TransportError) as info:
        validate_topic(topic)
    assert info.value.reason == "transport.topic"


def test_topic_length_counts_utf8_bytes() -> None:
    two_byte = "é" * (MAX_TOPIC_BYTES // 2)
    assert validate_topic(two_byte) == two_byte
    with pytest.raises(TransportError):
        validate_topic(two_byte + "é")


@pytest.mark.parametrize(
    "filter_", ["#", "+", "a/#", "a/+/b", "+/+", "/#", "$SYS/#", "a//+", "a/b"]
)
def test_valid_filters(filter_: str) -> None:
    assert validate_filter(filter_) == filter_


@pytest.mark.parametrize(
    "filter_", ["", "a/#/b", "#/a", "a#", "a/b#", "a+", "+a/b", "a/+b", "##", "x\x00"]
)
def test_invalid_filters(filter_: str) -> None:
    with pytest.raises(TransportError) as info:
        validate_filter(filter_)
    assert info.value.reason == "transport.topic"


# -- properties ----------------------------------------------------------------------
# A small alphabet of levels makes equal and differing levels both common, and includes the
# empty level and '$'-prefixed ones.
levels = st.sampled_from(["a", "b", "ab", "", "$x", "x$", "é"])
# A single empty level would be the empty string, which is not a valid topic.
topics = st.lists(levels, min_size=1, max_size=5).map("/".join).filter(bool)


@st.composite
def filters_for(draw: st.DrawFn) -> str:
    """A valid filter derived from a topic: some levels replaced by '+', maybe a '#' tail."""
    parts = draw(st.lists(levels, min_size=1, max_size=5))
    parts = [draw(st.sampled_from([part, "+"])) for part in parts]
    tail = draw(st.sampled_from(["none", "append", "replace"]))
    if tail == "append":
        parts.append("#")
    elif tail == "replace":
        parts[-1] = "#"
    filter_ = "/".join(parts)
    return filter_ or "#"


@given(filters_for(), topics)
def test_matches_agree_with_paho(filter_: str, topic: str) -> None:
    validate_filter(filter_)
    validate_topic(topic)
    assert topic_matches(filter_, topic) == paho.topic_matches_sub(filter_, topic)


@given(topics)
def test_a_topic_matches_itself(topic: str) -> None:
    assert topic_matches(topic, topic)


@given(topics)
def test_hash_matches_everything_but_dollar_topics(topic: str) -> None:
    assert topic_matches("#", topic) is not topic.startswith("$")


@given(topics, st.data())
def test_plus_stands_for_any_one_level(topic: str, data: st.DataObject) -> None:
    parts = topic.split("/")
    index = data.draw(st.integers(0, len(parts) - 1))
    parts[index] = "+"
    expected = not (index == 0 and topic.startswith("$"))
    assert topic_matches("/".join(parts), topic) is expected


@given(topics, topics)
def test_prefix_hash_matches_parent_and_children(parent: str, child: str) -> None:
    # '$' only matters at the start of the whole topic, which is the parent's first level.
    assert topic_matches(parent + "/#", parent)
    assert topic_matches(parent + "/#", parent + "/" + child)


@given(topics, st.data())
def test_a_filter_without_hash_matches_exactly_its_depth(topic: str, data: st.DataObject) -> None:
    parts = topic.split("/")
    wildcarded = [data.draw(st.sampled_from([part, "+"])) for part in parts]
    if topic.startswith("$"):
        wildcarded[0] = parts[0]  # a leading '+' would not match a '$' topic at all
    filter_ = "/".join(wildcarded)
    assert topic_matches(filter_, topic)
    assert not topic_matches(filter_, topic + "/extra")
    if len(parts) > 1:
        assert not topic_matches(filter_, "/".join(parts[:-1]))
