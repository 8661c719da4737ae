"""The built-in presets render valid, self-consistent network.toml text."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections import Counter
from typing import Any

import pytest

from i24net.config.presets import (
    EU_MEMBER_STATES,
    INTERPOL_MEMBERS,
    PRESETS,
    REGIONS,
    _toml_str,
    preset_toml,
    synthetic_toml,
)

ID = re.compile(r"^[A-Z0-9][A-Z0-9-]*$")
KINDS = {"gs", "ncb", "europol", "lea", "body"}
DERIVED = {"ALL", "NCB", *REGIONS}


def _load(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def _check_consistent(spec: dict[str, Any]) -> None:
    """What every spec must satisfy, whatever the preset."""
    net = spec["network"]
    assert set(net) == {
        "name", "prefix", "levels", "caveats", "max_skew_seconds", "default_ttl_hours",
    }  # fmt: skip
    assert net["levels"] == ["UNCLASSIFIED", "OFFICIAL-USE", "RESTRICTED", "CONFIDENTIAL", "SECRET"]
    assert net["caveats"] == ["EU", "CT", "FIN"]
    assert net["prefix"] == "i24/v1"
    assert net["max_skew_seconds"] == 300
    assert net["default_ttl_hours"] == 72
    broker = spec["broker"]
    assert broker["engine"] == "embedded"
    assert broker["host"] == "127.0.0.1"
    assert broker["tls"] is False

    agencies = spec["agency"]
    ids = [a["id"] for a in agencies]
    assert len(ids) == len(set(ids)), "agency ids must be unique"
    for a in agencies:
        assert set(a) == {"id", "name", "kind", "org", "region", "clearance", "caveats",
                          "roles"}
        assert ID.match(a["id"]), a["id"]
        assert a["name"]
        assert a["kind"] in KINDS
        assert a["region"] in REGIONS
        assert a["clearance"] in net["levels"]
        assert set(a["caveats"]) <= set(net["caveats"])
        assert len(a["caveats"]) == len(set(a["caveats"]))
        assert isinstance(a["roles"], list)

    known = set(ids)
    for group, members in spec["groups"].items():
        assert ID.match(group), group
        assert group not in DERIVED, f"derived group {group} must not be written"
        assert members, f"group {group} is empty"
        assert len(members) == len(set(members)), f"duplicate member in {group}"
        assert set(members) <= known, f"{group} names unknown agencies"


def _by_id(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["id"]: a for a in spec["agency"]}


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_parses_and_is_consistent(name: str) -> None:
    text = preset_toml(name)
    assert text.startswith("#"), "a header comment explains the file"
    spec = _load(text)
    assert spec["network"]["name"] == name
    _check_consistent(spec)


@pytest.mark.parametrize("name", PRESETS)
def test_rendering_is_stable(name: str) -> None:
    assert preset_toml(name) == preset_toml(name)


def test_presets_use_distinct_ports() -> None:
    ports = [_load(preset_toml(n))["broker"]["port"] for n in PRESETS]
    ports.append(_load(synthetic_toml(10))["broker"]["port"])
    assert ports == [18830, 18831, 18832]


def test_demo_agencies() -> None:
    spec = _load(preset_toml("demo"))
    agencies = _by_id(spec)
    expected = {
        "GS-LYON": ("gs", "EUROPE", "SECRET", ["EU", "CT", "FIN"]),
        "EUROPOL": ("europol", "EUROPE", "SECRET", ["EU"]),
        "NCB-FR": ("ncb", "EUROPE", "CONFIDENTIAL", ["EU"]),
        "NCB-DE": ("ncb", "EUROPE", "CONFIDENTIAL", ["EU"]),
        "NCB-US": ("ncb", "AMERICAS", "CONFIDENTIAL", []),
        "NCB-BR": ("ncb", "AMERICAS", "RESTRICTED", []),
        "NCB-JP": ("ncb", "ASIA-PACIFIC", "RESTRICTED", []),
        "NCB-ZA": ("ncb", "AFRICA", "OFFICIAL-USE", []),
    }
    assert len(spec["agency"]) == 8
    assert set(agencies) == set(expected)
    for agency_id, (kind, region, clearance, caveats) in expected.items():
        a = agencies[agency_id]
        assert (a["kind"], a["region"], a["clearance"], a["caveats"]) == (
            kind, region, clearance, caveats,
        ), agency_id  # fmt: skip
    assert agencies["GS-LYON"]["name"] == "INTERPOL General Secretariat, Lyon"
    assert agencies["GS-LYON"]["roles"] == ["notice-authority", "directory-authority"]
    assert agencies["EUROPOL"]["name"] == "Europol, The Hague"
    assert agencies["NCB-FR"]["name"] == "NCB Paris"
    assert agencies["NCB-ZA"]["name"] == "NCB Pretoria"
    assert spec["groups"] == {
        "EU": ["NCB-FR", "NCB-DE", "EUROPOL"],
        "G7-LIAISON": ["NCB-FR", "NCB-DE", "NCB-US", "NCB-JP"],
    }


def test_interpol_member_table() -> None:
    codes = [code for code, _, _ in INTERPOL_MEMBERS]
    assert len(INTERPOL_MEMBERS) == 196
    assert len(set(codes)) == 196
    assert codes == sorted(codes)
    for code, name, region in INTERPOL_MEMBERS:
        assert re.fullmatch(r"[A-Z]{2}", code), code
        assert name and name == name.strip()
        assert region in REGIONS
    # Every region has members; a few well-known placements.
    assert set(r for _, _, r in INTERPOL_MEMBERS) == set(REGIONS)
    region_of = {code: region for code, _, region in INTERPOL_MEMBERS}
    assert region_of["FR"] == "EUROPE"
    assert region_of["US"] == "AMERICAS"
    assert region_of["JP"] == "ASIA-PACIFIC"
    assert region_of["ZA"] == "AFRICA"
    assert region_of["EG"] == "MENA"
    # Not members: North Korea and Tuvalu (UN states), Kosovo; members beyond the UN.
    assert not {"KP", "TV", "XK"} & set(codes)
    assert {"VA", "PS", "AW", "CW", "SX", "PW", "FM", "NR"} <= set(codes)
    assert len(EU_MEMBER_STATES) == 27
    assert set(EU_MEMBER_STATES) <= set(codes)


def test_interpol_network() -> None:
    spec = _load(preset_toml("interpol"))
    agencies = spec["agency"]
    assert len(agencies) == 198
    kinds = Counter(a["kind"] for a in agencies)
    assert kinds == {"gs": 1, "europol": 1, "ncb": 196}
    by_id = _by_id(spec)
    assert by_id["GS-LYON"]["caveats"] == ["EU", "CT", "FIN"]
    assert by_id["GS-LYON"]["roles"] == ["notice-authority", "directory-authority"]
    assert by_id["EUROPOL"]["caveats"] == ["EU"]

    members = {code: (name, region) for code, name, region in INTERPOL_MEMBERS}
    ncbs = [a for a in agencies if a["kind"] == "ncb"]
    assert {a["id"] for a in ncbs} == {f"NCB-{c}" for c in members}
    for a in ncbs:
        name, region = members[a["id"].removeprefix("NCB-")]
        assert a["name"] == f"NCB {name}"
        assert a["region"] == region
    assert {a["region"] for a in agencies} == set(REGIONS)

    # Clearances are varied: mostly CONFIDENTIAL, every lower level but UNCLASSIFIED in use.
    clearances = Counter(a["clearance"] for a in ncbs)
    assert set(clearances) == {"SECRET", "CONFIDENTIAL", "RESTRICTED", "OFFICIAL-USE"}
    assert clearances.most_common(1)[0][0] == "CONFIDENTIAL"
    assert clearances["SECRET"] < 20
    assert clearances["OFFICIAL-USE"] < clearances["RESTRICTED"]

    # EU caveat: exactly the 27 EU member states' NCBs (plus GS-LYON and EUROPOL).
    eu_ncbs = {f"NCB-{c}" for c in EU_MEMBER_STATES}
    assert {a["id"] for a in ncbs if "EU" in a["caveats"]} == eu_ncbs
    assert set(spec["groups"]["EU"]) == eu_ncbs | {"EUROPOL"}

    # The CT cell: about fifteen NCBs, all holding the CT caveat, and no one else does.
    ct = spec["groups"]["CT"]
    assert 10 <= len(ct) <= 20
    assert {a["id"] for a in ncbs if "CT" in a["caveats"]} == set(ct)


def test_unknown_preset_raises_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown preset") as info:
        preset_toml("atlantis")
    for name in PRESETS:
        assert name in str(info.value)


def test_synthetic_3000() -> None:
    text = synthetic_toml(3000)
    spec = _load(text)
    _check_consistent(spec)
    agencies = spec["agency"]
    ids = [a["id"] for a in agencies]
    assert len(agencies) == 3000
    assert len(set(ids)) == 3000
    assert ids[:2] == ["GS-LYON", "EUROPOL"]
    assert ids[2] == "LEA-0001"
    assert ids[-1] == "LEA-2998"
    assert all(a["kind"] == "lea" for a in agencies[2:])
    assert {a["region"] for a in agencies} == set(REGIONS)
    assert len({a["clearance"] for a in agencies[2:]}) >= 3
    assert 2 <= len(spec["groups"]) <= 6
    assert "EUROPOL" in spec["groups"]["EU"]


def _synthetic_in_a_fresh_process(seed: int, hash_seed: str) -> str:
    """``synthetic_toml(3000, seed=seed)`` rendered by another Python process whose string
    hashes (hence set and dict-of-set orders) are salted with ``hash_seed``."""
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from i24net.config.presets import synthetic_toml; "
         f"sys.stdout.write(synthetic_toml(3000, seed={seed}))"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_synthetic_is_deterministic_for_a_seed() -> None:
    """The same seed gives the same network in processes with different hash salts (what two
    machines, or two runs, would have); another seed gives another network."""
    first = _synthetic_in_a_fresh_process(7, hash_seed="1")
    second = _synthetic_in_a_fresh_process(7, hash_seed="2")
    assert first and first == second
    assert first == synthetic_toml(3000, seed=7)
    other = _synthetic_in_a_fresh_process(8, hash_seed="1")
    assert other != first
    assert len(_load(other)["agency"]) == len(_load(first)["agency"]) == 3000
    assert synthetic_toml(3000) == synthetic_toml(3000, seed=0)


@pytest.mark.parametrize("n", [2, 3, 7, 12_000])
def test_synthetic_sizes(n: int) -> None:
    spec = _load(synthetic_toml(n, seed=1))
    _check_consistent(spec)
    assert len(spec["agency"]) == n


@pytest.mark.parametrize("bad", [0, 1, -5])
def test_synthetic_rejects_too_few(bad: int) -> None:
    with pytest.raises(ValueError):
        synthetic_toml(bad)


@pytest.mark.parametrize(
    "value", ["plain", 'quote " and \\ backslash', "tab\tnew\nline", "ctl \x01 \x7f", "Curaçao"]
)
def test_toml_strings_round_trip(value: str) -> None:
    assert tomllib.loads(f"v = {_toml_str(value)}")["v"] == value
