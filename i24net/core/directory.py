"""The signed, versioned directory: who is in the network, their keys, clearances and groups.

Theory of operation: ``network.toml`` (the human-edited spec, parsed by ``netspec``) plus the
agencies' public keys become a ``Directory``: a serial number, an issue time, the
classification scale, one ``AgencyRecord`` per agency and the explicit groups. The GS
directory authority signs its exact encoding (``DOMAIN_DIRECTORY || doc``); everyone else
holds the authority's public key as a trust anchor and ``load`` refuses anything that does
not verify against it, and anything older than the serial it already holds (no rollback).
Equal serials with different contents are refused too: one serial names one directory.

``rotate`` and ``revoke`` return a new directory with the next serial; revocation therefore
takes effect at the next directory version, everywhere the new version is loaded.

Addressing: ``@ALL`` (every active agency), ``@NCB`` (every active NCB), ``@<REGION>`` (every
active agency in that region), ``@<GROUP>`` (an explicit group) and plain agency ids.
Group expansion drops revoked agencies and the sender itself; naming a revoked or unknown
agency directly is an error the router turns into a refusal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from i24net.core import keys as k
from i24net.core.cooperation import (
    MAX_AGREEMENTS,
    MAX_OPERATIONS,
    ORG_ID,
    Agreement,
    Operation,
    check_terms,
)
from i24net.core.errors import DirectoryError
from i24net.core.labels import ClassificationScale, Label
from i24net.core.wire import MAX_RECIPIENTS, Fields, fail, pack, unpack

_CHECKED_PREKEYS: set[tuple[bytes, bytes, bytes, str]] = set()  # verified once per process
AGENCY_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*\Z")  # \Z, not $: "$" admits a final "\n"
GROUP_NAME = re.compile(r"^[A-Z][A-Z0-9-]{0,31}\Z")
KINDS = ("gs", "ncb", "europol", "lea", "body")
ROLES = ("notice-authority", "directory-authority", "notice-requester")
STATUSES = ("active", "revoked")
DERIVED_GROUPS = ("ALL", "NCB")

MAX_DIRECTORY = 8 << 20  # 3,000 agencies at ~300 bytes each, with ample margin
DIRECTORY_VERSION = 3
DEFAULT_ORG = "INTERPOL"
DEFAULT_PREKEY_GRACE_MS = 30 * 86_400_000  # the longest a message may live (policy.py)


@dataclass(frozen=True, slots=True)
class AgencyRecord:
    """One agency as the directory knows it."""

    id: str
    name: str
    kind: str
    region: str
    clearance: Label
    roles: frozenset[str]
    sign_key: bytes = field(repr=False)
    enc_key: bytes = field(repr=False)
    status: str = "active"
    key_version: int = 1
    prekey: bytes = field(default=b"", repr=False)  # X25519, medium-term, rotated
    prekey_sig: bytes = field(default=b"", repr=False)  # the agency's signature over it
    org: str = DEFAULT_ORG  # the organisation it belongs to (core/cooperation.py)

    def __post_init__(self) -> None:
        if not AGENCY_ID.match(self.id) or len(self.id) > 32:
            raise DirectoryError(f"invalid agency id {self.id!r}: use e.g. NCB-FR, GS-LYON",
                                 reason="directory.agency-id")
        if not ORG_ID.match(self.org):
            raise DirectoryError(f"{self.id}: invalid organisation {self.org!r} (e.g. "
                                 "INTERPOL, EUROPOL)", reason="directory.org", agency=self.id)
        if self.kind not in KINDS:
            raise DirectoryError(f"{self.id}: kind must be one of {', '.join(KINDS)}",
                                 reason="directory.kind", agency=self.id)
        if not isinstance(self.roles, frozenset):
            object.__setattr__(self, "roles", frozenset(self.roles))
        bad = self.roles - set(ROLES)
        if bad:
            raise DirectoryError(f"{self.id}: unknown role(s) {', '.join(sorted(bad))}",
                                 reason="directory.role", agency=self.id)
        if self.status not in STATUSES:
            raise DirectoryError(f"{self.id}: status must be active or revoked",
                                 reason="directory.status", agency=self.id)
        if len(self.sign_key) != k.KEY_SIZE or len(self.enc_key) != k.KEY_SIZE:
            raise DirectoryError(f"{self.id}: public keys must be 32 bytes",
                                 reason="directory.key", agency=self.id)
        if len(self.prekey) != k.KEY_SIZE or len(self.prekey_sig) != k.SIG_SIZE:
            raise DirectoryError(f"{self.id}: a prekey of 32 bytes and its 64-byte signature "
                                 "are required", reason="directory.key", agency=self.id)

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def key_id(self) -> bytes:
        return k.key_id(self.sign_key)

    @property
    def prekey_id(self) -> bytes:
        return k.prekey_id(self.prekey)

    def check_prekey(self) -> None:
        """The prekey is signed by this agency's signing key and not of low order."""
        found = (self.sign_key, self.prekey, self.prekey_sig, self.id)
        if found in _CHECKED_PREKEYS:
            return
        k.check_prekey(self.id, self.sign_key, self.prekey, self.prekey_sig)
        if len(_CHECKED_PREKEYS) >= 16_384:
            _CHECKED_PREKEYS.clear()
        _CHECKED_PREKEYS.add(found)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "kind": self.kind, "region": self.region,
            "level": self.clearance.level, "caveats": sorted(self.clearance.caveats),
            "roles": sorted(self.roles), "sign_key": self.sign_key, "enc_key": self.enc_key,
            "status": self.status, "key_version": self.key_version,
            "prekey": self.prekey, "prekey_sig": self.prekey_sig, "org": self.org,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> AgencyRecord:
        f = Fields(obj, "directory agency")
        rec = cls(
            id=f.text("id", max_len=32), name=f.text("name"), kind=f.text("kind"),
            region=f.text("region", max_len=32),
            clearance=Label(f.text("level", max_len=32),
                            frozenset(f.text_list("caveats", max_items=64, max_len=32))),
            roles=frozenset(f.text_list("roles", max_items=16)),
            sign_key=f.blob("sign_key", size=k.KEY_SIZE),
            enc_key=f.blob("enc_key", size=k.KEY_SIZE),
            status=f.text("status", max_len=16), key_version=f.integer("key_version", lo=1),
            prekey=f.blob("prekey", size=k.KEY_SIZE),
            prekey_sig=f.blob("prekey_sig", size=k.SIG_SIZE),
            org=f.text("org", max_len=32),
        )
        f.done()
        return rec


@dataclass(frozen=True, slots=True)
class Directory:
    """A directory version. Build with ``Directory(...)``; publish with ``sign``."""

    network: str
    serial: int
    issued_ms: int
    scale: ClassificationScale
    agencies: Mapping[str, AgencyRecord]
    groups: Mapping[str, tuple[str, ...]]
    authority_key: bytes = field(repr=False)
    prefix: str = "i24/v1"
    max_skew_ms: int = 300_000
    router_keys: tuple[bytes, ...] = field(default=(), repr=False)
    prekey_grace_ms: int = DEFAULT_PREKEY_GRACE_MS
    agreements: Mapping[str, Agreement] = field(default_factory=dict)
    operations: Mapping[str, Operation] = field(default_factory=dict)
    _expansions: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False,
                                                     compare=False)

    def __post_init__(self) -> None:
        # Always a fresh cache: dataclasses.replace() would otherwise hand the old version's
        # expansions (with since-revoked members) to the new one.
        object.__setattr__(self, "_expansions", {})
        if self.serial < 1:
            raise DirectoryError("directory serial must be at least 1", reason="directory.serial")
        if len(self.agencies) > MAX_RECIPIENTS:
            raise DirectoryError(f"a directory holds at most {MAX_RECIPIENTS} agencies",
                                 reason="directory.size")
        regions = {a.region for a in self.agencies.values()}
        for rid, rec in self.agencies.items():
            if rid != rec.id:
                raise DirectoryError(f"agency listed as {rid!r} but named {rec.id!r}",
                                     reason="directory.agency-id")
            try:
                self.scale.validate(rec.clearance)
            except Exception as exc:
                raise DirectoryError(f"{rid}: clearance {rec.clearance}: {exc}",
                                     reason="directory.clearance", agency=rid) from exc
        for name, members in self.groups.items():
            if not GROUP_NAME.match(name):
                raise DirectoryError(f"invalid group name {name!r}", reason="directory.group")
            if name in DERIVED_GROUPS or name in regions:
                raise DirectoryError(
                    f"group {name!r} clashes with a derived group (@ALL, @NCB or a region)",
                    reason="directory.group")
            for m in members:
                if m not in self.agencies:
                    raise DirectoryError(f"group @{name} lists unknown agency {m}",
                                         reason="directory.group", agency=m)
        if len(self.agreements) > MAX_AGREEMENTS or len(self.operations) > MAX_OPERATIONS:
            raise DirectoryError(f"a directory lists at most {MAX_AGREEMENTS} agreements and "
                                 f"{MAX_OPERATIONS} operations", reason="directory.size")
        check_terms(self.agreements, self.operations, self.scale, self.organisations(),
                    self.agencies, {*DERIVED_GROUPS, *regions, *self.groups})

    # -- lookups --------------------------------------------------------------------------

    def agency(self, agency_id: str) -> AgencyRecord:
        try:
            return self.agencies[agency_id]
        except KeyError:
            raise DirectoryError(f"{agency_id} is not in directory version {self.serial}",
                                 reason="directory.unknown-agency", agency=agency_id) from None

    def is_router_key(self, key: bytes) -> bool:
        return key in self.router_keys

    def authorities(self, role: str) -> list[str]:
        return sorted(a.id for a in self.agencies.values() if role in a.roles and a.active)

    def regions(self) -> list[str]:
        return sorted({a.region for a in self.agencies.values()})

    def group_names(self) -> list[str]:
        return ["ALL", "NCB", *self.regions(), *sorted(self.groups), *sorted(self.operations)]

    def organisations(self) -> set[str]:
        return {a.org for a in self.agencies.values()}

    def agreements_between(self, one: str, other: str) -> list[Agreement]:
        """The agreements whose parties are these two organisations, by id."""
        pair = {one, other}
        return [a for _, a in sorted(self.agreements.items()) if set(a.parties) == pair]

    def operation(self, name: str) -> Operation:
        try:
            return self.operations[name]
        except KeyError:
            known = ", ".join(sorted(self.operations)) or "none"
            raise DirectoryError(f"no operation {name} in directory version {self.serial} "
                                 f"(operations: {known})", reason="directory.operation") \
                from None

    def groups_of(self, agency_id: str) -> list[str]:
        """Every group (derived and explicit) the agency belongs to, as ``@NAME``."""
        rec = self.agency(agency_id)
        names = ["@ALL", f"@{rec.region}"]
        if rec.kind == "ncb":
            names.insert(1, "@NCB")
        names += [f"@{g}" for g, members in sorted(self.groups.items()) if agency_id in members]
        names += [f"@{o}" for o, op in sorted(self.operations.items())
                  if op.status == "active" and agency_id in op.members]
        return names

    def _group_members(self, name: str) -> tuple[str, ...]:
        cached = self._expansions.get(name)
        if cached is not None:
            return cached
        active = [a for a in self.agencies.values() if a.active]
        if name == "ALL":
            found = [a.id for a in active]
        elif name == "NCB":
            found = [a.id for a in active if a.kind == "ncb"]
        elif name in self.groups:
            found = [m for m in self.groups[name] if self.agencies[m].active]
        elif name in self.operations:
            op = self.operations[name]
            found = [m for m in op.members if op.status == "active" and self.agencies[m].active]
        elif any(a.region == name for a in self.agencies.values()):
            found = [a.id for a in active if a.region == name]
        else:
            raise DirectoryError(
                f"unknown group @{name}; known groups: "
                + ", ".join("@" + g for g in self.group_names()),
                reason="directory.unknown-group")
        result = tuple(sorted(found))
        self._expansions[name] = result
        return result

    def expand(self, addressing: Iterable[str], sender: str) -> tuple[str, ...]:
        """The sorted recipient ids that ``addressing`` names for ``sender``.

        Groups drop revoked agencies and the sender; a directly named agency is kept as
        named (the router refuses it if it is unknown or revoked).
        """
        out: set[str] = set()
        for item in addressing:
            if item.startswith("@"):
                out.update(m for m in self._group_members(item[1:]) if m != sender)
            else:
                out.add(item)
        return tuple(sorted(out))

    # -- versions -------------------------------------------------------------------------

    def next_version(self, issued_ms: int, **changes: Any) -> Directory:
        return replace(self, serial=self.serial + 1, issued_ms=issued_ms,
                       _expansions={}, **changes)

    def rotate(self, agency_id: str, public: k.PublicKeys, issued_ms: int) -> Directory:
        """A new version in which ``agency_id`` has new public keys (and a new prekey)."""
        rec = self.agency(agency_id)
        new = replace(rec, sign_key=public.sign_key, enc_key=public.enc_key,
                      prekey=public.prekey, prekey_sig=public.prekey_sig,
                      key_version=rec.key_version + 1)
        return self.next_version(issued_ms, agencies={**self.agencies, agency_id: new})

    def rotate_prekeys(self, prekeys: Mapping[str, tuple[bytes, bytes]],
                       issued_ms: int) -> Directory:
        """A new version listing new prekeys: agency id -> (prekey, agency's signature)."""
        agencies = dict(self.agencies)
        for agency_id, (pre, sig) in prekeys.items():
            agencies[agency_id] = replace(self.agency(agency_id), prekey=pre, prekey_sig=sig)
        return self.next_version(issued_ms, agencies=agencies)

    def revoke(self, agency_id: str, issued_ms: int) -> Directory:
        """A new version in which ``agency_id`` is revoked (its keys are no longer trusted)."""
        rec = self.agency(agency_id)
        if not rec.active:
            raise DirectoryError(f"{agency_id} is already revoked", reason="directory.revoked",
                                 agency=agency_id)
        new = replace(rec, status="revoked")
        return self.next_version(issued_ms, agencies={**self.agencies, agency_id: new})

    # -- agreements and joint operations --------------------------------------------------

    def _granting(self, name: str, grant: Iterable[str], take: Iterable[str]) -> dict[
            str, AgencyRecord]:
        """The agency records with caveat ``name`` added for ``grant``, removed for ``take``."""
        agencies = dict(self.agencies)
        for a in grant:
            rec = self.agency(a)
            agencies[a] = replace(rec, clearance=Label(rec.clearance.level,
                                                       rec.clearance.caveats | {name}))
        for a in take:
            rec = self.agency(a)
            agencies[a] = replace(rec, clearance=Label(rec.clearance.level,
                                                       rec.clearance.caveats - {name}))
        return agencies

    def create_operation(self, op: Operation, issued_ms: int) -> Directory:
        """A new version running ``op``: its name becomes a caveat of the network, granted
        to its members, and the group ``@NAME``."""
        if op.name in self.operations:
            raise DirectoryError(f"operation {op.name} already exists (state "
                                 f"{self.operations[op.name].state(issued_ms)}); choose "
                                 "another name", reason="directory.operation")
        if op.name in self.scale.caveats or op.name in self.group_names():
            raise DirectoryError(f"{op.name} is already a caveat or group of this network; "
                                 "choose another name", reason="directory.operation")
        for m in op.members:
            rec = self.agency(m)
            if not rec.active:
                raise DirectoryError(f"{m} is revoked and cannot join operation {op.name}",
                                     reason="directory.revoked", agency=m)
        scale = ClassificationScale(self.scale.levels, self.scale.caveats | {op.name})
        return self.next_version(issued_ms, scale=scale,
                                 agencies=self._granting(op.name, op.members, ()),
                                 operations={**self.operations, op.name: op})

    def change_operation(self, name: str, issued_ms: int, *, add: Iterable[str] = (),
                         remove: Iterable[str] = (), lead: str | None = None,
                         until_ms: int | None = None, level: str | None = None) -> Directory:
        """A new version where ``add`` joined operation ``name`` and ``remove`` left it
        (the removed lose its caveat and its group, so they receive nothing under it), and
        where given, its lead (a member, or one joining), end or level changed."""
        op = self.operation(name)
        if op.status != "active":
            raise DirectoryError(f"operation {name} is closed", reason="directory.operation")
        add, remove = [a for a in add if a not in op.members], list(remove)
        for a in add:
            if not self.agency(a).active:
                raise DirectoryError(f"{a} is revoked and cannot join operation {name}",
                                     reason="directory.revoked", agency=a)
        new_lead = op.lead if lead is None else lead
        if lead is not None and not self.agency(lead).active:
            raise DirectoryError(f"{lead} is revoked and cannot lead operation {name}",
                                 reason="directory.revoked", agency=lead)
        if until_ms is not None and until_ms <= issued_ms:
            raise DirectoryError(f"operation {name} cannot end before this version is "
                                 "issued", reason="directory.operation")
        for a in remove:
            if a not in op.members:
                raise DirectoryError(f"{a} is not a member of operation {name}",
                                     reason="directory.operation", agency=a)
            if a == new_lead:
                raise DirectoryError(f"{a} leads operation {name}: hand the lead on first "
                                     f"('i24net operation set {name} --lead AGENCY') or "
                                     "close the operation", reason="directory.operation",
                                     agency=a)
        members = tuple(sorted({*op.members, *add} - set(remove)))
        if new_lead not in members:
            raise DirectoryError(f"the lead of operation {name} must be one of its members, "
                                 f"not {new_lead}", reason="directory.operation",
                                 agency=new_lead)
        if level is not None and level not in self.scale.levels:
            raise DirectoryError(f"unknown level {level}; levels: "
                                 f"{', '.join(self.scale.levels)}", reason="directory.operation")
        removed = tuple(sorted((set(op.removed) | set(remove)) - set(add)))
        new = replace(op, members=members, removed=removed, lead=new_lead,
                      until_ms=op.until_ms if until_ms is None else until_ms,
                      level=op.level if level is None else level)
        return self.next_version(issued_ms, agencies=self._granting(name, add, remove),
                                 operations={**self.operations, name: new})

    def close_operation(self, name: str, issued_ms: int) -> Directory:
        """A new version where operation ``name`` is closed: no member holds its caveat any
        more and the router refuses anything under it."""
        op = self.operation(name)
        if op.status == "closed":
            raise DirectoryError(f"operation {name} is already closed",
                                 reason="directory.operation")
        new = replace(op, status="closed", closed_ms=issued_ms)
        return self.next_version(issued_ms, agencies=self._granting(name, (), op.members),
                                 operations={**self.operations, name: new})

    def end_agreement(self, agreement_id: str, at_ms: int, issued_ms: int) -> Directory:
        """A new version in which agreement ``agreement_id`` ends at ``at_ms``."""
        agr = self.agreements.get(agreement_id)
        if agr is None:
            known = ", ".join(sorted(self.agreements)) or "none"
            raise DirectoryError(f"no agreement {agreement_id} (agreements: {known})",
                                 reason="directory.agreement")
        return self.next_version(issued_ms, agreements={
            **self.agreements, agreement_id: replace(agr, until_ms=at_ms)})

    # -- encoding -------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The exact document bytes the authority signs."""
        return pack({
            "v": DIRECTORY_VERSION,
            "network": self.network,
            "serial": self.serial,
            "issued": self.issued_ms,
            "prefix": self.prefix,
            "max_skew_ms": self.max_skew_ms,
            "levels": list(self.scale.levels),
            "caveats": sorted(self.scale.caveats),
            "authority_key": self.authority_key,
            "router_keys": list(self.router_keys),
            "prekey_grace_ms": self.prekey_grace_ms,
            "agencies": [self.agencies[a].to_wire() for a in sorted(self.agencies)],
            "groups": {g: sorted(m) for g, m in sorted(self.groups.items())},
            "agreements": [self.agreements[a].to_wire() for a in sorted(self.agreements)],
            "operations": [self.operations[o].to_wire() for o in sorted(self.operations)],
        })

    def check_keys(self) -> None:
        """Refuse a directory holding a public key no honest party has (``key.low-order``):
        checked when one is issued (``sign``) and when one is loaded."""
        for rec in self.agencies.values():
            k.check_public_keys(rec.sign_key, rec.enc_key, who=f"directory record {rec.id}")
            rec.check_prekey()
        for n, key in enumerate(self.router_keys, 1):
            k.check_public_keys(key, None, who=f"directory router key {n}")

    def sign(self, authority_seed: bytes) -> bytes:
        """The signed directory file: msgpack ``[doc bytes, signature]``."""
        self.check_keys()
        doc = self.encode()
        return pack([doc, k.sign(authority_seed, k.DOMAIN_DIRECTORY, doc)])

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode_doc(cls, doc: bytes) -> Directory:
        obj = unpack(doc, what="directory", max_size=MAX_DIRECTORY)
        f = Fields(obj, "directory")
        version = f.integer("v")
        if version != DIRECTORY_VERSION:
            older = (" A home made by an older version: re-create it with 'i24net init "
                     "--force' (add '--spec FILE' to keep an edited network.toml)."
                     if version < DIRECTORY_VERSION else "")
            fail("directory", f"directory format version {version} is not supported (this "
                 f"build reads version {DIRECTORY_VERSION} only, which lists prekeys, "
                 f"organisations, agreements and operations).{older}",
                 reason="wire.version")
        network = f.text("network", max_len=64)
        serial = f.integer("serial", lo=1)
        issued = f.integer("issued")
        prefix = f.text("prefix", max_len=128)
        skew = f.integer("max_skew_ms", hi=86_400_000)
        levels = f.text_list("levels", max_items=32, max_len=32)
        caveats = f.text_list("caveats", max_items=64, max_len=32)
        authority = f.blob("authority_key", size=k.KEY_SIZE)
        raw_routers = f.raw("router_keys")
        grace = f.integer("prekey_grace_ms", lo=0, hi=10 * 365 * 86_400_000)
        raw_agencies = f.raw("agencies")
        raw_groups = f.raw("groups")
        raw_agreements = f.raw("agreements")
        raw_operations = f.raw("operations")
        f.done()
        if not isinstance(raw_agreements, list) or not isinstance(raw_operations, list):
            fail("directory", "agreements and operations must be lists")
        agreements = [Agreement.from_wire(a) for a in raw_agreements]
        operations = [Operation.from_wire(o) for o in raw_operations]
        if len({a.id for a in agreements}) != len(agreements) or len(
                {o.name for o in operations}) != len(operations):
            fail("directory", "duplicate agreement id or operation name")
        if not isinstance(raw_agencies, list) or not isinstance(raw_groups, dict):
            fail("directory", "agencies must be a list and groups a map")
        if not isinstance(raw_routers, list) or len(raw_routers) > 64 or not all(
                isinstance(r, bytes) and len(r) == k.KEY_SIZE for r in raw_routers):
            fail("directory", "router_keys must be a list of 32-byte keys")
        records = [AgencyRecord.from_wire(a) for a in raw_agencies]
        agencies = {r.id: r for r in records}
        if len(agencies) != len(records):
            fail("directory", "duplicate agency id")
        groups = {}
        for name, members in raw_groups.items():
            gf = Fields({"m": members}, f"directory group {name}")
            groups[name] = tuple(gf.text_list("m", max_len=32))
        try:
            return cls(network=network, serial=serial, issued_ms=issued,
                       scale=ClassificationScale(tuple(levels), frozenset(caveats)),
                       agencies=agencies, groups=groups, authority_key=authority,
                       prefix=prefix, max_skew_ms=skew, router_keys=tuple(raw_routers),
                       prekey_grace_ms=grace, agreements={a.id: a for a in agreements},
                       operations={o.name: o for o in operations})
        except DirectoryError:
            raise
        except Exception as exc:  # label/config validation inside a signed document
            raise DirectoryError(f"directory content is invalid: {exc}",
                                 reason="directory.invalid") from exc


def load(signed: bytes, anchor: bytes, *, held: Directory | None = None) -> Directory:
    """Verify and decode a signed directory against the trust anchor (authority public key).

    ``held`` is the version already held, if any: an older serial is refused as a rollback,
    and the same serial with different contents as a fork.
    """
    outer = unpack(signed, what="signed directory", max_size=MAX_DIRECTORY + 256, max_items=4)
    if not (isinstance(outer, list) and len(outer) == 2 and isinstance(outer[0], bytes)
            and isinstance(outer[1], bytes)):
        fail("signed directory", "expected [document, signature]")
    doc, sig = outer
    k.verify(anchor, k.DOMAIN_DIRECTORY, doc, sig, what="directory")
    d = Directory.decode_doc(doc)
    d.check_keys()
    if d.authority_key != anchor:
        raise DirectoryError("directory names a different authority key than the trust anchor",
                             reason="directory.authority")
    if held is not None:
        check_succession(held, d)
    return d


def check_succession(held: Directory, new: Directory) -> None:
    """Refuse ``new`` in place of ``held``: an older serial is a rollback, the same serial
    with different contents a fork (the authority key signed two). The one rule every
    holder (node, router, loader) applies."""
    if new.serial < held.serial:
        raise DirectoryError(
            f"directory version {new.serial} is older than version {held.serial} already "
            "held: refusing a rollback", reason="directory.rollback")
    if new.serial == held.serial and new.digest != held.digest:
        raise DirectoryError(
            f"two different directories claim version {new.serial}: keeping the one held",
            reason="directory.fork")


def peek_serial(signed: bytes) -> int:
    """The serial of a signed directory without verifying it (for messages only)."""
    outer = unpack(signed, what="signed directory", max_size=MAX_DIRECTORY + 256, max_items=4)
    if not (isinstance(outer, list) and len(outer) == 2 and isinstance(outer[0], bytes)):
        fail("signed directory", "expected [document, signature]")
    doc = unpack(outer[0], what="directory", max_size=MAX_DIRECTORY)
    if not isinstance(doc, dict) or not isinstance(doc.get("serial"), int):
        fail("directory", "no serial")
    return int(doc["serial"])
