"""netspec: network.toml as typed values; every error names its field; the spec's directory."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest
from fixednet import NOW, agency_keys, build_from_spec, secret
from hypothesis import given
from hypothesis import strategies as st

from i24net.config.presets import preset_toml
from i24net.core.directory import load
from i24net.core.errors import ConfigError
from i24net.core.keys import PublicKeys
from i24net.core.netspec import BrokerSettings, build_directory, parse_spec

DEMO: dict[str, Any] = tomllib.loads(preset_toml("demo"))


def demo(**edits: Any) -> dict[str, Any]:
    return copy.deepcopy(DEMO) | edits


def public_keys(ids: list[str], generation: int = 0) -> dict[str, PublicKeys]:
    return {a: agency_keys(a, generation).public() for a in ids}


def field_error(doc: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_spec(doc)
    assert info.value.reason == "config.field"
    return str(info.value)


# -- presets ---------------------------------------------------------------------------------

def test_demo_preset() -> None:
    spec = parse_spec(DEMO)
    assert spec.name == "demo" and spec.prefix == "i24/v1"
    assert len(spec.agencies) == 8
    assert spec.scale.levels[-1] == "SECRET"
    assert spec.scale.caveats == frozenset({"EU", "CT", "FIN"})
    assert spec.max_skew_seconds == 300 and spec.default_ttl_hours == 72
    assert spec.broker == BrokerSettings("embedded", "127.0.0.1", 18830, False)
    assert spec.groups["EU"] == ("NCB-FR", "NCB-DE", "EUROPOL")
    fr = next(a for a in spec.agencies if a.id == "NCB-FR")
    assert (fr.kind, fr.region, fr.clearance.marking) == ("ncb", "EUROPE", "CONFIDENTIAL//EU")
    gs = spec.agencies[0]
    assert gs.roles == frozenset({"notice-authority", "directory-authority"})


@pytest.mark.parametrize(("preset", "count"), [("demo", 8), ("interpol", 198)])
def test_preset_directories_sign_and_load(preset: str, count: int) -> None:
    net = build_from_spec(preset_toml(preset))
    d = load(net.signed, net.anchor)
    assert len(d.agencies) == count
    assert d.encode() == net.directory.encode()  # groups come back sorted
    assert d.max_skew_ms == 300_000
    if preset == "interpol":
        assert len(d.expand(["@NCB"], "GS-LYON")) == 196


# -- build_directory -------------------------------------------------------------------------

def test_build_directory_needs_every_key() -> None:
    spec = parse_spec(DEMO)
    keys = public_keys(spec.agency_ids())
    del keys["NCB-JP"]
    with pytest.raises(ConfigError) as info:
        build_directory(spec, keys, authority_key=b"\x01" * 32, serial=1, issued_ms=NOW)
    assert info.value.reason == "config.keys" and info.value.agency == "NCB-JP"


def test_build_directory_carries_revocations_and_key_versions() -> None:
    spec = parse_spec(DEMO)
    keys = public_keys(spec.agency_ids())
    v1 = build_directory(spec, keys, authority_key=b"\x01" * 32, serial=1, issued_ms=NOW)
    v2 = v1.revoke("NCB-ZA", NOW + 1)
    keys["NCB-FR"] = public_keys(["NCB-FR"], generation=1)["NCB-FR"]
    v3 = build_directory(spec, keys, authority_key=b"\x01" * 32, serial=3, issued_ms=NOW + 2,
                         previous=v2)
    assert v3.agency("NCB-ZA").status == "revoked"
    assert v3.agency("NCB-FR").key_version == 2
    assert v3.agency("NCB-DE").key_version == 1
    assert v3.agency("NCB-FR").sign_key == keys["NCB-FR"].sign_key


# -- every error names its field -------------------------------------------------------------

def agency_edit(i: int, **edits: Any) -> dict[str, Any]:
    doc = demo()
    doc["agency"][i].update(edits)
    return doc


@pytest.mark.parametrize(("doc", "names"), [
    (demo(extra={}), "extra"),
    ({k: v for k, v in DEMO.items() if k != "network"}, "network"),
    (demo(network={"levels": []}), "network.name"),
    (demo(network=DEMO["network"] | {"name": 7}), "network.name"),
    (demo(network=DEMO["network"] | {"name": ""}), "network.name"),
    (demo(network=DEMO["network"] | {"name": "n" * 65}), "network.name"),
    (demo(network=DEMO["network"] | {"prefix": "i24/#"}), "network.prefix"),
    (demo(network=DEMO["network"] | {"prefix": "/i24"}), "network.prefix"),
    (demo(network=DEMO["network"] | {"prefix": "p/" * 65}), "network.prefix"),
    (demo(network=DEMO["network"] | {"levels": ["A", "A"]}), "network.levels"),
    (demo(network=DEMO["network"] | {"levels": "SECRET"}), "network.levels"),
    (demo(network=DEMO["network"] | {"max_skew_seconds": -1}), "network.max_skew_seconds"),
    (demo(network=DEMO["network"] | {"max_skew_seconds": True}), "network.max_skew_seconds"),
    (demo(network=DEMO["network"] | {"default_ttl_hours": 0}), "network.default_ttl_hours"),
    (demo(broker={"engine": "rabbitmq"}), "broker"),
    (demo(broker={"port": 70000}), "broker"),
    (demo(broker="mosquitto"), "broker"),
    (demo(broker={"tls": "false"}), "broker.tls"),
    (demo(network=DEMO["network"] | {"levels": [f"L{i}" for i in range(33)]}),
     "network.levels"),
    (demo(network=DEMO["network"] | {"caveats": [f"C{i}" for i in range(65)]}),
     "network.levels"),
    (demo(agency=[]), "agency"),
    (demo(agency={}), "agency"),
    (agency_edit(2, id="ncb-fr"), "agency[2].id"),
    (agency_edit(2, id="NCB-FR\n"), "agency[2].id"),
    (agency_edit(2, id="NCB-DE"), "agency[3].id"),
    (agency_edit(2, kind="spy"), "agency[2].kind"),
    (agency_edit(2, roles=["king"]), "agency[2].roles"),
    (agency_edit(2, clearance="TOP-SECRET"), "agency[2].clearance"),
    (agency_edit(2, caveats=["NATO"]), "agency[2].clearance"),
    (agency_edit(2, colour="blue"), "agency[2].colour"),
    (agency_edit(2, region=5), "agency[2].region"),
    (agency_edit(2, region="NCB"), "agency[2].region"),
    (agency_edit(2, region="all"), "agency[2].region"),
    (agency_edit(2, region="NORTH EUROPE"), "agency[2].region"),
    (agency_edit(2, region="R" * 33), "agency[2].region"),
    (agency_edit(2, name=""), "agency[2].name"),
    (agency_edit(2, name="n" * 257), "agency[2].name"),
    (agency_edit(0, roles=[]), "directory-authority"),
    (demo(groups={"EU": ["NCB-XX"]}), "groups.EU"),
    (demo(groups={"EU": "NCB-FR"}), "groups.EU"),
    (demo(groups={"EU": ["NCB-FR", "NCB-FR"]}), "groups.EU"),
    (demo(groups={"eu": ["NCB-FR"]}), "groups.eu"),
    (demo(groups={"ALL": ["NCB-FR"]}), "groups.ALL"),
    (demo(groups={"EUROPE": ["NCB-FR"]}), "groups.EUROPE"),
    (demo(groups=["EU"]), "groups"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_errors_name_the_field(doc: dict[str, Any], names: str) -> None:
    assert names in field_error(doc)


def test_region_is_upper_cased() -> None:
    spec = parse_spec(agency_edit(2, region="europe"))
    assert spec.agencies[2].region == "EUROPE"


def test_name_defaults_to_id() -> None:
    doc = demo()
    del doc["agency"][2]["name"]
    assert parse_spec(doc).agencies[2].name == "NCB-FR"


# -- whatever parse_spec accepts issues a directory that loads -------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=70)


@given(name=texts, agency_name=texts, region=texts, members=st.lists(
    st.sampled_from(["NCB-FR", "NCB-DE", "EUROPOL", "NCB-XX"]), max_size=4),
       group=st.sampled_from(["EU", "EU-2", "eu", "ALL", "NCB", "EUROPE", "G7", "X" * 33]))
def test_accepted_specs_issue_loadable_directories(name: str, agency_name: str, region: str,
                                                   members: list[str], group: str) -> None:
    doc = demo(groups={group: members})
    doc["network"]["name"] = name
    doc["agency"][3]["name"] = agency_name
    doc["agency"][3]["region"] = region
    try:
        spec = parse_spec(doc)
    except ConfigError:
        return
    try:
        d = build_directory(spec, public_keys(spec.agency_ids()),
                            authority_key=agency_keys("AUTH").verify_key, serial=1,
                            issued_ms=NOW)
    except ConfigError:
        return
    except Exception as exc:  # the directory refused what the spec accepted
        pytest.fail(f"spec accepted but directory refused: {exc!r}")
    signed = d.sign(secret("sign-AUTH"))
    assert load(signed, agency_keys("AUTH").verify_key).encode() == d.encode()


def test_each_member_may_bind_a_loopback_address_of_its_own() -> None:
    hosts = ("127.0.0.1", "127.0.0.2", "127.0.0.3")
    b = BrokerSettings("nats", "127.0.0.1", 30_000, members=3, member_hosts=hosts)
    assert b.member_addresses() == [("127.0.0.1", 30_000), ("127.0.0.2", 30_010),
                                    ("127.0.0.3", 30_020)]
    assert b.host_of(2) == "127.0.0.2"
    assert b.for_engine("mosquitto").member_hosts == ()
    with pytest.raises(ConfigError, match="one address per member"):
        BrokerSettings("nats", "127.0.0.1", 30_000, members=3, member_hosts=hosts[:2])
    with pytest.raises(ConfigError, match="one address per member"):
        BrokerSettings("mosquitto", "127.0.0.1", 30_000, member_hosts=hosts[:1])
    with pytest.raises(ConfigError, match=r"10\.0\.0\.2 is not a loopback address"):
        BrokerSettings("nats", "127.0.0.1", 30_000, members=3,
                       member_hosts=("127.0.0.1", "10.0.0.2", "127.0.0.3"))
