"""Accounts and topic rules: known cases from the MQTT spec, then properties against oracles.

The property tests check ``topic_matches`` against an independent regex translation of the
spec, and ``filter_covers`` against its definition (every topic the requested filter matches
is matched by the allowed one), evaluated over a finite universe of topics that is exhaustive
for the small level alphabet the filters are drawn from.
"""

from __future__ import annotations

import functools
import itertools
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from i24net.broker import (
    ROUTER_USERNAME,
    BrokerAccount,
    BrokerConfigError,
    accounts_for,
    client_id_allowed,
    filter_covers,
    generate_password,
    is_valid_topic_filter,
    is_valid_topic_name,
    may_publish,
    may_receive,
    may_subscribe,
    topic_matches,
)

# --- topic_matches: MQTT 3.1.1 §4.7 -------------------------------------------------------

MATCHES = [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/b", "a/b/c", False),
    ("a/b/c", "a/b", False),
    ("a/+", "a/b", True),
    ("a/+", "a/", True),  # '+' matches an empty level
    ("a/+", "a", False),
    ("a/+", "a/b/c", False),
    ("+/+", "/b", True),  # a leading '/' makes an empty first level
    ("+", "/b", False),
    ("/+", "/b", True),
    ("a/#", "a", True),  # '#' matches the parent level too
    ("a/#", "a/b/c", True),
    ("a/#", "ab", False),
    ("a/#", "b/a", False),
    ("#", "a/b/c", True),
    ("#", "/", True),
    ("#", "$SYS/broker/load", False),  # wildcards at level one never match '$' topics
    ("+/broker/load", "$SYS/broker/load", False),
    ("$SYS/#", "$SYS/broker/load", True),
    ("$SYS/+/load", "$SYS/broker/load", True),
    ("a/+/#", "a/b", True),
    ("a/+/#", "a", False),
    ("i24/v1/inbox/NCB-FR", "i24/v1/inbox/NCB-FR", True),
    ("i24/v1/inbox/+", "i24/v1/inbox/NCB-FR", True),
    ("i24/v1/inbox/NCB-FR", "i24/v1/inbox/NCB-FRX", False),
    # invalid filters or topics match nothing
    ("a/#/b", "a/x/b", False),
    ("a+", "a+", False),
    ("a/b#", "a/b#", False),
    ("", "", False),
    ("a/+", "a/+", False),  # a topic name may not contain wildcards
    ("#", "a\x00b", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_topic_matches_known_cases(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    ("text", "as_filter", "as_topic"),
    [
        ("a/b", True, True),
        ("a/+/c", True, False),
        ("a/#", True, False),
        ("#", True, False),
        ("+", True, False),
        ("a/#/c", False, False),
        ("a/b+", False, False),
        ("a/##", False, False),
        ("", False, False),
        ("/", True, True),
        ("$SYS/x", True, True),
        ("a\x00", False, False),
        ("x" * 65536, False, False),
    ],
)
def test_validity(text: str, as_filter: bool, as_topic: bool) -> None:
    assert is_valid_topic_filter(text) is as_filter
    assert is_valid_topic_name(text) is as_topic


# --- filter_covers: the subscribe check ---------------------------------------------------

COVERS = [
    ("a/b", "a/b", True),
    ("a/+", "a/b", True),
    ("a/+", "a/+", True),
    ("a/b", "a/+", False),  # the brief's case: inbox/NCB-FR does not allow inbox/+
    ("a/+", "a/#", False),  # amqtt's built-in ACL gets this one wrong
    ("a/#", "a", True),  # ... and this one
    ("a/#", "a/#", True),
    ("a/#", "a/b/#", True),
    ("a/#", "a/+/c", True),
    ("a/b/#", "a/#", False),
    ("#", "a/#", True),
    ("#", "#", True),
    ("+/#", "#", True),  # both match every non-'$' topic
    ("+/+/#", "#", False),
    ("a/+/#", "a/#", False),  # "a/#" matches "a", "a/+/#" does not
    ("#", "$SYS/x", False),
    ("+/x", "$SYS/x", False),
    ("$SYS/#", "$SYS/x", True),
    ("+/x", "+/x", True),
    ("a/b", "#", False),
    ("a/b", "a/b/c", False),
    ("a/b/c", "a/b", False),
    ("a/#/b", "a/x/b", False),  # invalid allowed filter covers nothing
    ("a/#", "a/#/b", False),  # invalid request is never covered
]


@pytest.mark.parametrize(("allowed", "requested", "expected"), COVERS)
def test_filter_covers_known_cases(allowed: str, requested: str, expected: bool) -> None:
    assert filter_covers(allowed, requested) is expected


# --- properties against independent oracles -----------------------------------------------

# Levels the filters use. "z" and "$z" stand for every literal the filters do not name, so a
# universe built from LEVELS + OTHERS with one level more than the longest filter holds a
# representative of every topic as far as these filters can tell.
LEVELS = ["a", "", "$x"]
OTHERS = ["z", "$z"]
MAX_FILTER_LEVELS = 4
UNIVERSE = [
    "/".join(levels)
    for depth in range(1, MAX_FILTER_LEVELS + 2)
    for levels in itertools.product(LEVELS + OTHERS, repeat=depth)
    if levels != ("",)  # the empty string is not a topic name
]


def oracle_matches(topic_filter: str, topic: str) -> bool:
    """The spec as a regex: '+' is one level, a trailing '#' any levels incl. the parent."""
    levels = topic_filter.split("/")
    if levels[-1] == "#":
        head = "/".join(re.escape(x) if x != "+" else "[^/]*" for x in levels[:-1])
        pattern = ".*" if not head and len(levels) == 1 else head + "(/.*)?"
    else:
        pattern = "/".join(re.escape(x) if x != "+" else "[^/]*" for x in levels)
    if topic.startswith("$") and levels[0] in ("+", "#"):
        return False
    return re.fullmatch(pattern, topic, flags=re.DOTALL) is not None


level = st.sampled_from([*LEVELS, "+"])
filters = st.builds(
    lambda body, hash_tail: "/".join(body + (["#"] if hash_tail else [])),
    st.lists(level, min_size=0, max_size=MAX_FILTER_LEVELS - 1),
    st.booleans(),
).filter(lambda f: f != "")
topics = (
    st.lists(st.sampled_from(LEVELS + OTHERS), min_size=1, max_size=MAX_FILTER_LEVELS + 1)
    .map("/".join)
    .filter(lambda t: t != "")
)


@given(filters, topics)
def test_topic_matches_agrees_with_regex_oracle(topic_filter: str, topic: str) -> None:
    assert topic_matches(topic_filter, topic) == oracle_matches(topic_filter, topic)


@functools.cache
def matched_in_universe(topic_filter: str) -> frozenset[str]:
    return frozenset(t for t in UNIVERSE if topic_matches(topic_filter, t))


@settings(deadline=None)
@given(filters, filters)
def test_filter_covers_is_topic_set_inclusion(allowed: str, requested: str) -> None:
    assert filter_covers(allowed, requested) == (
        matched_in_universe(requested) <= matched_in_universe(allowed)
    )


@given(filters)
def test_every_filter_covers_itself(topic_filter: str) -> None:
    assert filter_covers(topic_filter, topic_filter)


@given(topics)
def test_a_topic_used_as_filter_matches_exactly_itself(topic: str) -> None:
    assert topic_matches(topic, topic)
    assert matched_in_universe(topic) == {topic}


# --- accounts -----------------------------------------------------------------------------

PASSWORDS = {
    "NCB-FR": "pw-fr-0123456789",
    "NCB-DE": "pw-de-0123456789",
    ROUTER_USERNAME: "pw-router-01234",
}


def test_accounts_for_builds_the_design_grants() -> None:
    fr, de, router = accounts_for(["NCB-FR", "NCB-DE"], PASSWORDS)
    assert fr == BrokerAccount(
        "NCB-FR",
        "pw-fr-0123456789",
        publish=("i24/v1/submit/NCB-FR", "i24/v1/submit/NCB-FR/to/+", "i24/v1/presence/NCB-FR"),
        subscribe=("i24/v1/inbox/NCB-FR", "i24/v1/directory", "i24/v1/presence/+"),
    )
    assert de.username == "NCB-DE"
    assert router == BrokerAccount(
        ROUTER_USERNAME,
        "pw-router-01234",
        publish=("i24/v1/inbox/+", "i24/v1/directory", "i24/v1/presence/+",
                 "i24/v1/route/+"),
        subscribe=("i24/v1/submit/+", "i24/v1/submit/+/to/+", "i24/v1/directory",
                   "i24/v1/presence/+", "i24/v1/route/+"),
    )


def test_accounts_for_uses_the_prefix() -> None:
    passwords = {"GS-LYON": "pw-gs-0123456789", ROUTER_USERNAME: "pw-router-01234"}
    gs, router = accounts_for(["GS-LYON"], passwords, prefix="drill/7")
    assert gs.publish == ("drill/7/submit/GS-LYON", "drill/7/submit/GS-LYON/to/+",
                          "drill/7/presence/GS-LYON")
    assert router.subscribe == ("drill/7/submit/+", "drill/7/submit/+/to/+", "drill/7/directory",
                                "drill/7/presence/+", "drill/7/route/+")


@pytest.mark.parametrize(
    ("topic", "agency_may", "router_may"),
    [
        ("i24/v1/submit/NCB-FR", True, False),
        ("i24/v1/submit/NCB-DE", False, False),
        ("i24/v1/presence/NCB-FR", True, True),
        ("i24/v1/presence/NCB-DE", False, True),
        ("i24/v1/inbox/NCB-FR", False, True),
        ("i24/v1/inbox/NCB-DE", False, True),
        ("i24/v1/directory", False, True),
        ("i24/v1/submit/NCB-FR/extra", False, False),
        ("$SYS/broker/clients", False, False),
    ],
)
def test_who_may_publish(topic: str, agency_may: bool, router_may: bool) -> None:
    fr, _, router = accounts_for(["NCB-FR", "NCB-DE"], PASSWORDS)
    assert may_publish(fr, topic) is agency_may
    assert may_publish(router, topic) is router_may


@pytest.mark.parametrize(
    ("topic_filter", "agency_may", "router_may"),
    [
        ("i24/v1/inbox/NCB-FR", True, False),
        ("i24/v1/inbox/NCB-DE", False, False),
        ("i24/v1/inbox/+", False, False),
        ("i24/v1/inbox/#", False, False),
        ("i24/v1/#", False, False),
        ("#", False, False),
        ("+/+/+/+", False, False),
        ("i24/v1/directory", True, True),
        ("i24/v1/presence/+", True, True),
        ("i24/v1/presence/NCB-DE", True, True),
        ("i24/v1/presence/#", False, False),  # would also match "i24/v1/presence" itself
        ("i24/v1/submit/+", False, True),
        ("i24/v1/submit/NCB-DE", False, True),
        ("i24/v1/submit/#", False, False),
        ("$SYS/#", False, False),
    ],
)
def test_who_may_subscribe(topic_filter: str, agency_may: bool, router_may: bool) -> None:
    fr, _, router = accounts_for(["NCB-FR", "NCB-DE"], PASSWORDS)
    assert may_subscribe(fr, topic_filter) is agency_may
    assert may_subscribe(router, topic_filter) is router_may


def test_may_receive_follows_the_subscribe_grants() -> None:
    fr, _, router = accounts_for(["NCB-FR", "NCB-DE"], PASSWORDS)
    assert may_receive(fr, "i24/v1/inbox/NCB-FR")
    assert not may_receive(fr, "i24/v1/inbox/NCB-DE")
    assert may_receive(router, "i24/v1/submit/NCB-DE")
    assert not may_receive(router, "i24/v1/inbox/NCB-DE")
    assert not may_receive(fr, "i24/v1/+")


@pytest.mark.parametrize(
    ("agencies", "passwords", "prefix", "complaint"),
    [
        (["NCB-FR"], {"NCB-FR": "pw"}, "i24/v1", "no broker password for i24-router"),
        (["NCB-FR", "NCB-FR"], PASSWORDS, "i24/v1", "listed twice"),
        ([ROUTER_USERNAME], PASSWORDS, "i24/v1", "reserved for the router"),
        (["NCB FR"], {**PASSWORDS, "NCB FR": "pw"}, "i24/v1", "username 'NCB FR' is invalid"),
        (["NCB-FR"], PASSWORDS, "i24/+", "prefix"),
        (["NCB-FR"], PASSWORDS, "i24/v1/", "prefix"),
        (["NCB-FR"], PASSWORDS, "$SYS", "prefix"),
        (["NCB-FR"], PASSWORDS, "a b", "prefix"),
    ],
)
def test_accounts_for_refuses_bad_input(
    agencies: list[str], passwords: dict[str, str], prefix: str, complaint: str
) -> None:
    with pytest.raises(BrokerConfigError, match=re.escape(complaint)):
        accounts_for(agencies, passwords, prefix)


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"username": ""}, "username '' is invalid"),
        ({"username": "a:b"}, "is invalid"),
        ({"username": "x" * 129}, "is invalid"),
        ({"password": ""}, "password"),
        ({"password": "has space"}, "password"),
        ({"password": "line\nbreak"}, "password"),
        ({"publish": "a/b"}, "must be a sequence"),
        ({"publish": ("a/#/b",)}, "not a valid MQTT topic filter"),
        ({"subscribe": ("a b",)}, "space or control character"),
    ],
)
def test_account_validation(kwargs: dict[str, object], complaint: str) -> None:
    fields: dict[str, object] = {
        "username": "NCB-FR",
        "password": "secret-secret",
        "publish": ("a/b",),
        "subscribe": ("c/d",),
    }
    fields.update(kwargs)
    with pytest.raises(BrokerConfigError, match=re.escape(complaint)):
        BrokerAccount(**fields)  # type: ignore[arg-type]


def test_account_keeps_the_password_out_of_repr_and_round_trips() -> None:
    account = BrokerAccount("NCB-FR", "s3cret-value", publish=["a/b"], subscribe=["c/+"])  # type: ignore[arg-type]
    assert account.publish == ("a/b",)  # lists from JSON become tuples
    assert "s3cret-value" not in repr(account)
    assert BrokerAccount.from_dict(account.to_dict()) == account
    with pytest.raises(BrokerConfigError, match="exactly the keys"):
        BrokerAccount.from_dict({**account.to_dict(), "admin": True})


@pytest.mark.parametrize(
    ("username", "client_id", "allowed"),
    [
        ("NCB-FR", "NCB-FR", True),
        ("NCB-FR", "NCB-FR:node", True),
        ("NCB-FR", "NCB-FR:", True),
        ("NCB-FR", "NCB-FRX", False),
        ("NCB", "NCB-FR", False),  # a shorter username cannot claim a longer one's ids
        ("NCB-FR", "NCB-DE", False),
        ("NCB-FR", "", False),
        ("NCB-FR", "paho-random-123", False),
    ],
)
def test_client_id_binding(username: str, client_id: str, allowed: bool) -> None:
    assert client_id_allowed(username, client_id) is allowed


def test_generate_password_is_32_urlsafe_chars_from_the_given_source() -> None:
    fixed = generate_password(lambda n: bytes(range(n)))
    assert fixed == generate_password(lambda n: bytes(range(n)))
    assert len(fixed) == 32
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", generate_password(os.urandom))
    assert generate_password(os.urandom) != generate_password(os.urandom)
    BrokerAccount("NCB-FR", generate_password(os.urandom), publish=(), subscribe=())
    with pytest.raises(BrokerConfigError, match="did not return 24 bytes"):
        generate_password(lambda n: b"short")


def test_filter_covers_exhaustively_on_the_small_alphabet() -> None:
    """Every pair of filters up to three levels (plus '#') over the alphabet: ~28,000 pairs,
    each compared with set inclusion over the universe. Exact, where Hypothesis samples."""
    all_filters = sorted(
        {
            "/".join([*body, "#"] if hash_tail else list(body))
            for depth in range(MAX_FILTER_LEVELS)
            for body in itertools.product([*LEVELS, "+"], repeat=depth)
            for hash_tail in (False, True)
        }
        - {""}
    )
    wrong = [
        (allowed, requested)
        for allowed in all_filters
        for requested in all_filters
        if filter_covers(allowed, requested)
        != (matched_in_universe(requested) <= matched_in_universe(allowed))
    ]
    assert wrong == []
