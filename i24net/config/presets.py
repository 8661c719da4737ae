"""Built-in network presets, rendered as ``network.toml`` text.

A network is described by a human-edited spec, ``network.toml``: the classification scale and
caveats, the MQTT broker, the explicit groups and one ``[[agency]]`` block per node. Writing
that file by hand for 198 National Central Bureaus is tedious, so the presets here produce a
ready-made spec that a user starts from and then edits:

* ``demo``: eight agencies (the General Secretariat, Europol and six NCBs over four regions),
  small enough to run on a laptop and to read in one screen;
* ``interpol``: the General Secretariat, Europol and one NCB for each of INTERPOL's 196
  member countries, with plausible clearances, the ``EU`` caveat for the 27 EU member
  states and a counter-terrorism cell holding the ``CT`` caveat;
* ``synthetic_toml(n)``: a large, seeded, synthetic network of law enforcement authorities
  (for example 3,000, the scale of Europol's SIENA with its 3,000+ connected authorities),
  for load tests.

Everything is rendered as text, in a stable order and with a header comment explaining how
to edit the file, so two runs produce byte-identical files. Only explicit groups are written:
the derived groups ``@ALL``, ``@NCB`` and one per region (``@EUROPE``...) are computed by the
program when it loads the spec.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import tomlkit
import tomlkit.exceptions

from i24net.core.directory import DEFAULT_ORG
from i24net.core.errors import ConfigError
from i24net.core.labels import DEFAULT_LEVELS
from i24net.core.netspec import DEFAULT_ORGS

PRESETS: tuple[str, ...] = ("demo", "interpol")

#: INTERPOL's regions (its regional bureaus); MENA is the Middle East and North Africa.
REGIONS: tuple[str, ...] = ("AFRICA", "AMERICAS", "ASIA-PACIFIC", "EUROPE", "MENA")

#: The caveats every preset declares: European Union, counter-terrorism, financial crime.
CAVEATS: tuple[str, ...] = ("EU", "CT", "FIN")

DEMO_PORT = 18830
INTERPOL_PORT = 18831
SYNTHETIC_PORT = 18832

# --- INTERPOL's 196 member countries -------------------------------------------------------
#
# Membership as of the 91st General Assembly (Vienna, November 2023), which admitted Palau as
# the 196th member country: the 193 UN member states except the two that are not members
# (North Korea "KP" and Tuvalu "TV"), that is 191, plus five members that are not UN member
# states: Vatican City "VA", Palestine "PS" and the Dutch Caribbean countries Aruba "AW",
# Curaçao "CW" and Sint Maarten "SX". Kosovo ("XK") is *not* a member (its 2018 application
# was rejected). Regions follow INTERPOL's regional bureaus loosely: MENA holds the Arab
# states of the Middle East and North Africa; Israel, Türkiye, Cyprus and the Caucasus are in
# EUROPE; Iran, Central and South Asia are in ASIA-PACIFIC.
#
# One region header per block, then "ISO-3166-1-alpha-2  Country name" per line.
_MEMBER_TABLE = """
[AFRICA]
AO Angola
BF Burkina Faso
BI Burundi
BJ Benin
BW Botswana
CD Democratic Republic of the Congo
CF Central African Republic
CG Congo
CI Côte d'Ivoire
CM Cameroon
CV Cabo Verde
DJ Djibouti
ER Eritrea
ET Ethiopia
GA Gabon
GH Ghana
GM Gambia
GN Guinea
GQ Equatorial Guinea
GW Guinea-Bissau
KE Kenya
KM Comoros
LR Liberia
LS Lesotho
MG Madagascar
ML Mali
MR Mauritania
MU Mauritius
MW Malawi
MZ Mozambique
NA Namibia
NE Niger
NG Nigeria
RW Rwanda
SC Seychelles
SD Sudan
SL Sierra Leone
SN Senegal
SO Somalia
SS South Sudan
ST São Tomé and Príncipe
SZ Eswatini
TD Chad
TG Togo
TZ Tanzania
UG Uganda
ZA South Africa
ZM Zambia
ZW Zimbabwe

[AMERICAS]
AG Antigua and Barbuda
AR Argentina
AW Aruba
BB Barbados
BO Bolivia
BR Brazil
BS Bahamas
BZ Belize
CA Canada
CL Chile
CO Colombia
CR Costa Rica
CU Cuba
CW Curaçao
DM Dominica
DO Dominican Republic
EC Ecuador
GD Grenada
GT Guatemala
GY Guyana
HN Honduras
HT Haiti
JM Jamaica
KN Saint Kitts and Nevis
LC Saint Lucia
MX Mexico
NI Nicaragua
PA Panama
PE Peru
PY Paraguay
SR Suriname
SV El Salvador
SX Sint Maarten
TT Trinidad and Tobago
US United States
UY Uruguay
VC Saint Vincent and the Grenadines
VE Venezuela

[ASIA-PACIFIC]
AF Afghanistan
AU Australia
BD Bangladesh
BN Brunei
BT Bhutan
CN China
FJ Fiji
FM Micronesia
ID Indonesia
IN India
IR Iran
JP Japan
KG Kyrgyzstan
KH Cambodia
KI Kiribati
KR Republic of Korea
KZ Kazakhstan
LA Laos
LK Sri Lanka
MH Marshall Islands
MM Myanmar
MN Mongolia
MV Maldives
MY Malaysia
NP Nepal
NR Nauru
NZ New Zealand
PG Papua New Guinea
PH Philippines
PK Pakistan
PW Palau
SB Solomon Islands
SG Singapore
TH Thailand
TJ Tajikistan
TL Timor-Leste
TM Turkmenistan
TO Tonga
UZ Uzbekistan
VN Viet Nam
VU Vanuatu
WS Samoa

[EUROPE]
AD Andorra
AL Albania
AM Armenia
AT Austria
AZ Azerbaijan
BA Bosnia and Herzegovina
BE Belgium
BG Bulgaria
BY Belarus
CH Switzerland
CY Cyprus
CZ Czechia
DE Germany
DK Denmark
EE Estonia
ES Spain
FI Finland
FR France
GB United Kingdom
GE Georgia
GR Greece
HR Croatia
HU Hungary
IE Ireland
IL Israel
IS Iceland
IT Italy
LI Liechtenstein
LT Lithuania
LU Luxembourg
LV Latvia
MC Monaco
MD Moldova
ME Montenegro
MK North Macedonia
MT Malta
NL Netherlands
NO Norway
PL Poland
PT Portugal
RO Romania
RS Serbia
RU Russia
SE Sweden
SI Slovenia
SK Slovakia
SM San Marino
TR Türkiye
UA Ukraine
VA Vatican City

[MENA]
AE United Arab Emirates
BH Bahrain
DZ Algeria
EG Egypt
IQ Iraq
JO Jordan
KW Kuwait
LB Lebanon
LY Libya
MA Morocco
OM Oman
PS Palestine
QA Qatar
SA Saudi Arabia
SY Syria
TN Tunisia
YE Yemen
"""


def _parse_member_table(text: str) -> tuple[tuple[str, str, str], ...]:
    members: list[tuple[str, str, str]] = []
    region = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            region = line[1:-1]
            continue
        code, _, name = line.partition(" ")
        members.append((code, name.strip(), region))
    return tuple(sorted(members))


#: ``(iso_alpha2, country_name, region)`` for each of INTERPOL's 196 member countries,
#: sorted by ISO code.
INTERPOL_MEMBERS: tuple[tuple[str, str, str], ...] = _parse_member_table(_MEMBER_TABLE)

#: The 27 member states of the European Union; their NCBs hold the ``EU`` caveat.
EU_MEMBER_STATES: tuple[str, ...] = (
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
    "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
)  # fmt: skip

# Clearances of the ``interpol`` preset: CONFIDENTIAL unless listed here. SECRET for a few
# large bureaus; RESTRICTED for microstates and small island states with small bureaus;
# OFFICIAL-USE for the newest members, whose NCBs are still being set up.
_SECRET_NCBS = ("AU", "CA", "DE", "ES", "FR", "GB", "IT", "JP", "US")
_RESTRICTED_NCBS = (
    "AD", "AG", "AW", "BB", "BS", "BT", "CV", "CW", "DM", "GD", "GW", "KM", "KN", "LC",
    "LI", "MC", "MH", "MV", "SC", "SM", "ST", "SX", "TL", "TO", "VC", "VU", "WS",
)  # fmt: skip
_OFFICIAL_USE_NCBS = ("FM", "KI", "NR", "PW", "SB", "VA")

# The counter-terrorism cell (group ``CT``, caveat ``CT``) and the financial-crime desks
# (caveat ``FIN``) of the ``interpol`` preset.
_CT_CELL = (
    "AU", "BE", "CA", "DE", "ES", "FR", "GB", "ID", "IN", "IT", "JO", "MA", "NL", "TR", "US",
)  # fmt: skip
_FIN_DESKS = ("CH", "GB", "LU", "SG", "US")


# --- the model rendered ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Agency:
    id: str
    name: str
    kind: str
    region: str
    clearance: str
    caveats: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    port: int
    description: str
    groups: dict[str, list[str]]
    # An ``_Agency`` or a ``str`` section comment written before the agencies that follow.
    agencies: list[_Agency | str]


_GS_LYON = _Agency(
    id="GS-LYON",
    name="INTERPOL General Secretariat, Lyon",
    kind="gs",
    region="EUROPE",
    clearance="SECRET",
    caveats=CAVEATS,
    roles=("notice-authority", "directory-authority"),
)
_EUROPOL = _Agency(
    id="EUROPOL",
    name="Europol, The Hague",
    kind="europol",
    region="EUROPE",
    clearance="SECRET",
    caveats=("EU",),
)


def _caveats(held: Iterable[str]) -> tuple[str, ...]:
    """Caveats in the network's declared order, without duplicates."""
    wanted = set(held)
    return tuple(c for c in CAVEATS if c in wanted)


# --- TOML rendering -------------------------------------------------------------------------

def _toml_str(value: str) -> str:
    """A TOML basic string (tomlkit escapes quotes, backslashes and control characters)."""
    return tomlkit.item(value).as_string()


def _toml_key(key: str) -> str:
    """A bare key when ``key`` may be one, else a quoted key (tomlkit decides)."""
    return tomlkit.key(key).as_string()


def _toml_array(items: Sequence[str], *, indent: str = "", key_width: int = 0) -> str:
    """An array of strings; one line if it fits in 96 columns, else wrapped with a trailing comma."""
    quoted = [_toml_str(i) for i in items]
    one_line = "[" + ", ".join(quoted) + "]"
    if len(indent) + key_width + len(one_line) <= 96:
        return one_line
    lines = ["["]
    line = ""
    for q in quoted:
        piece = q + ","
        if line and len(line) + 1 + len(piece) > 88:
            lines.append("    " + line)
            line = piece
        else:
            line = f"{line} {piece}" if line else piece
    if line:
        lines.append("    " + line)
    lines.append("]")
    return "\n".join(lines)


# The INTERPOL-Europol agreement every preset carries (INTERPOL and Europol have cooperated
# under an operational agreement since 2001): operational traffic up to CONFIDENTIAL with
# the SIENA handling codes H0-H2 honoured and H3 not; INTERPOL's notices reach Europol, but
# Europol neither requests nor cancels notices (it asks through a member country's NCB).
AGREEMENT_ID = "INTERPOL-EUROPOL"
AGREEMENT_UNTIL = "2031-12-31"
_TO_EUROPOL = ("message", "alert", "diffusion", "notice", "notice-update", "notice-cancel",
               "deletion-order", "release")
_FROM_EUROPOL = ("message", "alert", "deletion-order", "release")


def _agreement_lines() -> list[str]:
    out = [
        "[[agreement]]",
        f"id = {_toml_str(AGREEMENT_ID)}",
        f"title = {_toml_str('Agreement on co-operation between INTERPOL and Europol')}",
        f"parties = {_toml_array(['INTERPOL', 'EUROPOL'])}",
        f"until = {AGREEMENT_UNTIL}",
    ]
    for source, target, kinds in (("INTERPOL", "EUROPOL", _TO_EUROPOL),
                                  ("EUROPOL", "INTERPOL", _FROM_EUROPOL)):
        out += [
            "",
            "[[agreement.flow]]",
            f"from = {_toml_str(source)}",
            f"to = {_toml_str(target)}",
            f"kinds = {_toml_array(kinds, key_width=8)}",
            f"max_level = {_toml_str('CONFIDENTIAL')}",
            f"caveats = {_toml_array(CAVEATS)}",
            f"handling = {_toml_array(['H0', 'H1', 'H2'])}",
        ]
    return out


def _render(spec: _Spec) -> str:
    agencies = [a for a in spec.agencies if isinstance(a, _Agency)]
    regions = ", ".join("@" + r for r in REGIONS)
    out: list[str] = [
        f"# i24net network spec: {spec.name}",
        f"# {spec.description}",
        f"# {len(agencies)} agencies, {len(spec.groups)} explicit groups.",
        "#",
        "# Generated from an i24net preset (i24net/config/presets.py); the file is yours to edit.",
        "#   [network]   the network's name, its MQTT topic prefix, the classification levels",
        "#               (lowest first), the caveats, the accepted clock skew and the default",
        "#               message lifetime.",
        "#   [broker]    the MQTT broker: engine 'embedded' (in-process), 'mosquitto', or",
        "#               'nats' (a local cluster of 'members' members, MQTT on port,",
        "#               port + 10, ...); 'addresses' lists brokers run elsewhere.",
        "#   [router]    'shards': routers sharing the load by sender (one key each).",
        "#   [retention] how long a recipient keeps each kind's bodies before erasing them",
        "#               (kind = \"365d\", \"90d\", \"12h\"...); kinds left out are kept.",
        "#   [[agreement]] what may pass between two organisations (each agency belongs to",
        "#               one: 'org'), one [[agreement.flow]] per direction: the kinds, the",
        "#               highest level, the caveats and the handling codes; past 'until' the",
        "#               router refuses what it covered. Traffic inside one organisation",
        "#               needs no agreement.",
        "#   [groups]    explicit groups, addressed as @NAME; members are agency ids defined",
        "#               below. The derived groups @ALL, @NCB and one per region",
        f"#               ({regions})",
        "#               are computed by the program: do not write them.",
        "#   [[agency]]  one block per agency: id (upper-case letters, digits, '-'), name,",
        "#               kind (gs | ncb | europol | lea | body), organisation (org), region,",
        "#               clearance (a level), caveats (a subset of [network].caveats) and",
        "#               roles.",
        "# An agency may read a message when its clearance level is at least the message's and",
        "# it holds every caveat of the message. To add an agency, copy a block and change its",
        "# id; to remove one, delete its block and its id from [groups].",
        "",
        "[network]",
        f"name = {_toml_str(spec.name)}",
        f"prefix = {_toml_str('i24/v1')}",
        f"levels = {_toml_array(DEFAULT_LEVELS)}",
        f"caveats = {_toml_array(CAVEATS)}",
        "max_skew_seconds = 300",
        "default_ttl_hours = 72",
        "",
        "[broker]",
        f"engine = {_toml_str('embedded')}",
        f"host = {_toml_str('127.0.0.1')}",
        f"port = {spec.port}",
        "tls = false",
        "",
        "[retention]",
        f"diffusion = {_toml_str('365d')}",
        f"alert = {_toml_str('90d')}",
        "",
        *_agreement_lines(),
        "",
        "[groups]",
    ]
    for group, members in spec.groups.items():
        key = _toml_key(group)
        out.append(f"{key} = {_toml_array(members, key_width=len(key) + 3)}")
    for item in spec.agencies:
        out.append("")
        if isinstance(item, str):
            out.append(f"# --- {item} ---")
            continue
        out += [
            "[[agency]]",
            f"id = {_toml_str(item.id)}",
            f"name = {_toml_str(item.name)}",
            f"kind = {_toml_str(item.kind)}",
            f"org = {_toml_str(DEFAULT_ORGS.get(item.kind, DEFAULT_ORG))}",
            f"region = {_toml_str(item.region)}",
            f"clearance = {_toml_str(item.clearance)}",
            f"caveats = {_toml_array(item.caveats)}",
            f"roles = {_toml_array(item.roles)}",
        ]
    return "\n".join(out) + "\n"


# --- the presets ----------------------------------------------------------------------------


def _demo() -> _Spec:
    def ncb(code: str, city: str, region: str, clearance: str, *caveats: str) -> _Agency:
        return _Agency(f"NCB-{code}", f"NCB {city}", "ncb", region, clearance, caveats)

    return _Spec(
        name="demo",
        port=DEMO_PORT,
        description="A small demonstration network: the General Secretariat, Europol, six NCBs.",
        groups={
            "EU": ["NCB-FR", "NCB-DE", "EUROPOL"],
            "G7-LIAISON": ["NCB-FR", "NCB-DE", "NCB-US", "NCB-JP"],
        },
        agencies=[
            _GS_LYON,
            _EUROPOL,
            ncb("FR", "Paris", "EUROPE", "CONFIDENTIAL", "EU"),
            ncb("DE", "Wiesbaden", "EUROPE", "CONFIDENTIAL", "EU"),
            ncb("US", "Washington", "AMERICAS", "CONFIDENTIAL"),
            ncb("BR", "Brasilia", "AMERICAS", "RESTRICTED"),
            ncb("JP", "Tokyo", "ASIA-PACIFIC", "RESTRICTED"),
            ncb("ZA", "Pretoria", "AFRICA", "OFFICIAL-USE"),
        ],
    )


def _ncb_clearance(code: str) -> str:
    if code in _SECRET_NCBS:
        return "SECRET"
    if code in _OFFICIAL_USE_NCBS:
        return "OFFICIAL-USE"
    if code in _RESTRICTED_NCBS:
        return "RESTRICTED"
    return "CONFIDENTIAL"


def _interpol() -> _Spec:
    agencies: list[_Agency | str] = ["INTERPOL General Secretariat and Europol", _GS_LYON, _EUROPOL]
    for region in REGIONS:
        members = [(code, name) for code, name, r in INTERPOL_MEMBERS if r == region]
        agencies.append(f"{region}: {len(members)} National Central Bureaus")
        for code, name in members:
            held = []
            if code in EU_MEMBER_STATES:
                held.append("EU")
            if code in _CT_CELL:
                held.append("CT")
            if code in _FIN_DESKS:
                held.append("FIN")
            agencies.append(
                _Agency(
                    id=f"NCB-{code}",
                    name=f"NCB {name}",
                    kind="ncb",
                    region=region,
                    clearance=_ncb_clearance(code),
                    caveats=_caveats(held),
                )
            )
    return _Spec(
        name="interpol",
        port=INTERPOL_PORT,
        description=(
            "INTERPOL: the General Secretariat, Europol and the NCBs of the 196 member countries."
        ),
        groups={
            "EU": [f"NCB-{c}" for c in EU_MEMBER_STATES] + ["EUROPOL"],
            "CT": [f"NCB-{c}" for c in _CT_CELL],
        },
        agencies=agencies,
    )


def preset_toml(name: str) -> str:
    """The ``network.toml`` text of the built-in preset ``name`` (one of ``PRESETS``)."""
    if name == "demo":
        return _render(_demo())
    if name == "interpol":
        return _render(_interpol())
    raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")


def synthetic_toml(n_agencies: int, *, seed: int = 0) -> str:
    """A large synthetic network of ``n_agencies`` agencies, deterministic for a ``seed``.

    GS-LYON and EUROPOL plus ``n_agencies - 2`` law enforcement authorities ``LEA-0001``...
    (kind ``lea``) spread over the five regions, with clearances and caveats drawn from
    ``random.Random(seed)``, and a few explicit groups: ``EU`` (Europol and the European
    authorities holding the EU caveat), ``CT-CELL`` and ``FIN-UNIT`` (the holders of those
    caveats) and ``JIT-1``, a joint investigation team of up to a dozen authorities.
    """
    if isinstance(n_agencies, bool) or not isinstance(n_agencies, int):
        raise TypeError(f"n_agencies must be an int, not {type(n_agencies).__name__}")
    if n_agencies < 2:
        raise ValueError(f"n_agencies must be at least 2 (GS-LYON and EUROPOL), not {n_agencies}")
    rng = random.Random(seed)
    n_lea = n_agencies - 2
    width = max(4, len(str(n_lea)))
    lea_levels = DEFAULT_LEVELS[1:]  # OFFICIAL-USE .. SECRET
    lea_weights = (30, 40, 25, 5)
    leas: list[_Agency] = []
    for i in range(1, n_lea + 1):
        number = f"{i:0{width}d}"
        region = rng.choice(REGIONS)
        clearance = rng.choices(lea_levels, weights=lea_weights)[0]
        held = []
        if region == "EUROPE" and rng.random() < 0.6:
            held.append("EU")
        if rng.random() < 0.03:
            held.append("CT")
        if rng.random() < 0.04:
            held.append("FIN")
        leas.append(
            _Agency(
                id=f"LEA-{number}",
                name=f"Law enforcement authority {number} ({region.title()})",
                kind="lea",
                region=region,
                clearance=clearance,
                caveats=_caveats(held),
            )
        )
    groups: dict[str, list[str]] = {
        "EU": ["EUROPOL"] + [a.id for a in leas if "EU" in a.caveats],
    }
    for group, caveat in (("CT-CELL", "CT"), ("FIN-UNIT", "FIN")):
        holders = [a.id for a in leas if caveat in a.caveats]
        if holders:
            groups[group] = holders
    if leas:
        team = sorted(rng.sample(range(len(leas)), min(12, len(leas))))
        groups["JIT-1"] = [leas[i].id for i in team]
    spec = _Spec(
        name="synthetic",
        port=SYNTHETIC_PORT,
        description=(
            f"A synthetic network of {n_agencies} agencies (seed {seed}): "
            "GS-LYON, EUROPOL and law enforcement authorities."
        ),
        groups=groups,
        agencies=[_GS_LYON, _EUROPOL, *leas],
    )
    return _render(spec)


def configure(text: str, *, engine: str | None = None, port: int | None = None,
              routers: int | None = None, tls: bool | None = None) -> str:
    """``text`` (a network.toml) with ``[broker]`` engine, port and tls and ``[router]``
    shards set where given; everything else, comments and layout included, stays as it is.

    The text is edited as a TOML document (tomlkit), so a table written with a comment after
    its header, as an inline table or with dotted keys is found and edited in place; a
    ``[broker]`` table is added when there is none and a setting is given, a ``[router]``
    table when there is none and ``routers`` is not 1. ``configure(text, engine="embedded",
    port=p, tls=False)`` puts a network on the embedded broker at ``127.0.0.1:p`` without TLS.
    """
    broker_settings = {key: value for key, value in
                       (("engine", engine), ("port", port), ("tls", tls)) if value is not None}
    if not broker_settings and routers is None:
        return text
    try:
        doc = tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"network.toml: {exc}", reason="config.toml") from exc
    if broker_settings:
        if "broker" not in doc:
            doc["broker"] = tomlkit.table()
        broker = doc["broker"]
        for key, value in broker_settings.items():
            broker[key] = value
    if routers is not None:
        if "router" in doc:
            doc["router"]["shards"] = routers
        elif routers != 1:
            doc["router"] = {"shards": routers}
    out = doc.as_string()
    return out if out.endswith("\n") else out + "\n"
