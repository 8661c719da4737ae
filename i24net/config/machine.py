"""Per-machine homes: what one machine of a network spread over several needs, and no more.

``export_machine`` writes, from the authority's home, a home for a machine that runs some of
the agencies (their nodes) and perhaps some router shards:

- the public part of the network, as every machine needs it: ``network.toml``, the signed
  directory, the trust anchor (``authority.pub``), the serial and digest of the newest
  directory the authority issued (``state/directory.held``, so the machine refuses an older
  one from then on), and the broker's CA certificate if the network uses TLS;
- the private keys of its agencies only, and of its router shards only
  (``keys/<id>.key``);
- the broker passwords of those accounts only (``keys/broker.toml``: the agencies', and the
  router account's when it runs a router);
- ``machine.toml``: the machine's name, its agencies and shards, and the directory version it
  was exported at.

Never exported: the directory authority's key (a machine cannot issue a directory), any
other agency's key or password, the CA's private key, stores, audit logs and logs. The
layout of a home is in docs/home.md; running a network over several machines in
docs/scale-out.md.
"""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from i24net.config.home import MACHINE_FILE, ROUTER_ACCOUNT, Home, now_ms
from i24net.core.errors import ConfigError
from i24net.core.netspec import CLUSTER_ENGINES

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


@dataclass(frozen=True, slots=True)
class Machine:
    """What ``machine.toml`` says: the machine a home was exported for."""

    name: str
    agencies: tuple[str, ...]
    router_shards: tuple[int, ...]
    directory_serial: int
    exported_ms: int
    broker_members: tuple[int, ...] = ()  # the NATS cluster members this machine runs

    def to_toml(self) -> str:
        agencies = ", ".join(f'"{a}"' for a in self.agencies)
        shards = ", ".join(str(k) for k in self.router_shards)
        members = ", ".join(str(k) for k in self.broker_members)
        return (f'name = "{self.name}"\n'
                f"agencies = [{agencies}]\n"
                f"router_shards = [{shards}]\n"
                f"broker_members = [{members}]\n"
                f"directory_serial = {self.directory_serial}\n"
                f"exported_ms = {self.exported_ms}\n")

    @classmethod
    def parse(cls, text: str, where: str) -> Machine:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{where}: {exc}", reason="config.toml") from exc
        name, agencies, shards = data.get("name"), data.get("agencies"), \
            data.get("router_shards")
        serial, exported = data.get("directory_serial"), data.get("exported_ms")
        members = data.get("broker_members", [])
        if not (isinstance(name, str) and _NAME.fullmatch(name)
                and isinstance(agencies, list) and all(isinstance(a, str) for a in agencies)
                and isinstance(shards, list) and isinstance(members, list)
                and all(isinstance(k, int) and k >= 1 for k in [*shards, *members])
                and isinstance(serial, int) and isinstance(exported, int)):
            raise ConfigError(f"{where} is not a machine file i24net wrote: it needs name, "
                              "agencies, router_shards, directory_serial and exported_ms",
                              reason="config.machine")
        return cls(name, tuple(agencies), tuple(shards), serial, exported, tuple(members))


MACHINES_DIR = "machines"  # in the authority's home: one MACHINE.toml per export


def exported(home: Home) -> dict[str, Machine]:
    """The machines the authority's ``home`` exported (``machines/NAME.toml``), by name."""
    folder = home.path / MACHINES_DIR
    if not folder.is_dir():
        return {}
    out = {}
    for path in sorted(folder.glob("*.toml")):
        m = Machine.parse(path.read_text(), str(path))
        out[m.name] = m
    return out


@dataclass(frozen=True, slots=True)
class Share:
    """What runs from one home: its agencies' nodes and its router shards. ``split`` is
    true when the network's router shards are spread over several machines: the local
    shard leases (``shard_host``) cannot see another machine's routers, so no router takes
    over another's shard."""

    agencies: tuple[str, ...]
    router_shards: tuple[int, ...]
    split: bool
    broker_members: tuple[int, ...] = ()  # the cluster members run from this home


def share_of(home: Home) -> Share:
    """A machine's export runs what it was exported with; the authority's home runs every
    active agency and shard that no export took."""
    machine = machine_of(home)
    if machine is not None:
        return Share(machine.agencies, machine.router_shards, True, machine.broker_members)
    d = home.directory()
    gone = {a for m in exported(home).values() for a in m.agencies}
    shards = shards_here(home)
    return Share(tuple(sorted(a.id for a in d.agencies.values() if a.active and a.id not in gone)),
                 shards, len(shards) < home.spec().router_shards, members_here(home))


def members_here(home: Home, count: int | None = None) -> tuple[int, ...]:
    """The NATS cluster members ``home`` runs: an export's own, or, on the authority's home,
    those of the ``count`` (default: ``[broker] members``) no export took (every member on
    a single-machine network). Given ``count``, it reads only the small machine files."""
    return _numbers_here(home, "broker_members",
                         lambda: home.spec().broker.members if count is None else count)


def shards_here(home: Home) -> tuple[int, ...]:
    """The router shards ``home`` runs (``share_of``); needs only the spec and the machine
    files, so it answers for a spec that has no directory yet."""
    return _numbers_here(home, "router_shards", lambda: home.spec().router_shards)


def _numbers_here(home: Home, field: str, count: Callable[[], int]) -> tuple[int, ...]:
    """An export's own ``field`` (shards or members), or those of ``1..count()`` that no
    export of the authority's ``home`` took."""
    machine = machine_of(home)
    if machine is not None:
        return tuple(getattr(machine, field))
    taken = {k for m in exported(home).values() for k in getattr(m, field)}
    return tuple(k for k in range(1, count() + 1) if k not in taken)


def machine_of(home: Home) -> Machine | None:
    """The machine ``home`` was exported for, or ``None`` for a network's own home."""
    path = home.path / MACHINE_FILE
    if not path.exists():
        return None
    return Machine.parse(path.read_text(), str(path))


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"machine name {name!r}: use letters, digits, '-' and '_' (at most "
                          "63, starting with a letter or digit)", reason="config.machine")
    return name


def export_machine(home: Home, out: Path, name: str, agencies: Sequence[str],
                   router_shards: Sequence[int] = (),
                   broker_members: Sequence[int] = ()) -> Machine:
    """Write the home of machine ``name`` (its ``agencies``, ``router_shards`` and
    ``broker_members``) at ``out``, which must not exist or be empty; return what
    ``machine.toml`` says. A machine that runs members also needs the members' files
    (``runtime.export_member_files``, which the broker's layer writes)."""
    _check_name(name)
    if machine_of(home) is not None:
        raise ConfigError(f"{home.path} is itself a machine's export: export from the home "
                          "that holds the directory authority's key", reason="config.machine")
    home.authority_seed()  # only the authority's home holds every key
    d = home.directory()
    if not agencies and not router_shards and not broker_members:
        raise ConfigError("a machine needs agencies (--agencies), router shards (--routers) "
                          "or broker members (--members)", reason="config.machine")
    broker = home.spec().broker
    for k in broker_members:
        if broker.engine not in CLUSTER_ENGINES or not 1 <= k <= broker.members:
            raise ConfigError(f"broker member {k}: this network's broker has "
                              f"{broker.members if broker.engine in CLUSTER_ENGINES else 'no'}"
                              " cluster members ([broker] in network.toml)",
                              reason="config.machine")
    for agency in agencies:
        record = d.agency(agency)
        if not record.active:
            raise ConfigError(f"{agency} is revoked in directory version {d.serial}: a "
                              "machine cannot run it", reason="config.machine", agency=agency)
    if len(set(agencies)) != len(agencies):
        raise ConfigError("--agencies names an agency twice", reason="config.machine")
    count = home.spec().router_shards
    for k in router_shards:
        if not 1 <= k <= count:
            raise ConfigError(f"router shard {k}: this network has {count} ([router] shards "
                              "in network.toml)", reason="config.shard")
    for other in exported(home).values():
        if other.name == name:
            continue  # exported again: this export replaces that one
        taken = sorted(set(agencies) & set(other.agencies))
        shards_taken = sorted(set(router_shards) & set(other.router_shards))
        members_taken = sorted(set(broker_members) & set(other.broker_members))
        if taken or shards_taken or members_taken:
            what = ", ".join([*taken, *(f"router shard {k}" for k in shards_taken),
                              *(f"broker member {k}" for k in members_taken)])
            raise ConfigError(f"{what} already run(s) on machine {other.name} "
                              f"({MACHINES_DIR}/{other.name}.toml): one agency or shard runs "
                              "on one machine; export that machine again without it first",
                              reason="config.machine")
    out = out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty: export into a new "
                          "folder", reason="config.home")
    target = Home(out)
    passwords = home.broker_passwords()
    machine = Machine(name, tuple(agencies), tuple(sorted(set(router_shards))), d.serial,
                      now_ms(), tuple(sorted(set(broker_members))))
    for sub in ("keys", "state", "broker", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(target.keys_dir, 0o700)
    shutil.copyfile(home.spec_file, target.spec_file)
    shutil.copyfile(home.anchor_file, target.anchor_file)
    shutil.copyfile(home.directory_file, target.directory_file)
    shutil.copyfile(home.state_dir / "directory.held", target.state_dir / "directory.held")
    tls = home.broker_dir / "tls"
    member_files = ("server.crt", "server.key") if machine.broker_members else ()
    for file in ("ca.crt", *member_files):  # a member serves TLS; never the CA's key
        if (tls / file).exists():
            (target.broker_dir / "tls").mkdir(exist_ok=True)
            shutil.copy2(tls / file, target.broker_dir / "tls" / file)
    accounts = list(agencies) + ([ROUTER_ACCOUNT] if machine.router_shards else [])
    for agency in agencies:
        target.write_keys(home.keys(agency))
    for k in machine.router_shards:
        target.write_keys(home.router_keys(k))
    missing = [a for a in accounts if a not in passwords]
    if missing:
        raise ConfigError(f"keys/broker.toml has no password for {', '.join(missing)}",
                          reason="config.keys")
    target.write_broker_passwords({a: passwords[a] for a in accounts})
    (out / MACHINE_FILE).write_text(machine.to_toml())
    target.directory()  # what was written verifies against the anchor, as the machine will
    records = home.path / MACHINES_DIR
    records.mkdir(exist_ok=True)
    (records / f"{name}.toml").write_text(machine.to_toml())
    return machine


