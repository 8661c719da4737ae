"""``i24net export``: a machine's home holds the secrets of its own agencies and router
shards, the public part of the network, and nothing else."""

from __future__ import annotations

import json
import stat
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from i24net.config.home import Home
from i24net.config.machine import Machine, machine_of
from i24net.core.errors import ConfigError

Run = Callable[..., Result]  # the ``run`` fixture (tests/cli/conftest.py)


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_a_machine_gets_its_agencies_and_shards_and_nothing_else(
        run: Run, sharded: Path, tmp_path: Path) -> None:
    out = tmp_path / "machine-b"
    result = run("export", "--machine", "b", "--agencies", "NCB-DE,NCB-US", "--routers", "2",
                 "--home", sharded, out)
    assert result.exit_code == 0, result.output
    assert "exported machine b" in result.output
    assert files(out) == {
        "network.toml", "directory.signed", "authority.pub", "machine.toml",
        "state/directory.held", "keys/NCB-DE.key", "keys/NCB-US.key",
        "keys/i24-router-2.key", "keys/broker.toml"}
    authority = Home(sharded)
    for name in ("network.toml", "directory.signed", "authority.pub", "state/directory.held"):
        assert (out / name).read_bytes() == (authority.path / name).read_bytes()
    for name in ("NCB-DE.key", "NCB-US.key", "i24-router-2.key"):
        assert (out / "keys" / name).read_bytes() == (authority.keys_dir / name).read_bytes()
        assert stat.S_IMODE((out / "keys" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "keys").stat().st_mode) == 0o700
    passwords = tomllib.loads((out / "keys" / "broker.toml").read_text())
    everyone = authority.broker_passwords()
    assert passwords == {a: everyone[a] for a in ("NCB-DE", "NCB-US", "i24-router")}

    machine = Home(out)
    assert machine.directory().digest == authority.directory().digest
    assert machine.keys("NCB-DE").public() == authority.keys("NCB-DE").public()
    assert machine.router_keys(2).verify_key == authority.router_keys(2).verify_key
    m = machine_of(machine)
    assert m == Machine("b", ("NCB-DE", "NCB-US"), (2,), authority.directory().serial,
                        m.exported_ms if m else 0)
    assert machine_of(authority) is None
    with pytest.raises(ConfigError, match="machine's export"):
        machine.keys("NCB-FR")
    with pytest.raises(ConfigError, match="machine's export"):
        machine.router_keys(1)
    with pytest.raises(ConfigError, match="authority key"):
        machine.authority_seed()


def test_a_machine_cannot_issue_a_directory(run: Run, sharded: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    assert run("export", "--machine", "m", "--agencies", "NCB-FR", "--home", sharded,
               out).exit_code == 0
    result = run("directory", "issue", "--home", out)
    assert result.exit_code != 0
    assert "authority key" in result.output


def test_a_router_only_machine(run: Run, sharded: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = run("export", "--machine", "r", "--routers", "all", "--home", sharded, out)
    assert result.exit_code == 0, result.output
    assert files(out) >= {"keys/i24-router.key", "keys/i24-router-2.key"}
    assert not [f for f in files(out) if f.startswith("keys/NCB")]
    assert set(tomllib.loads((out / "keys" / "broker.toml").read_text())) == {"i24-router"}


def test_tls_networks_export_the_ca_certificate_not_its_key(
        run: Run, sharded: Path, tmp_path: Path) -> None:
    tls = sharded / "broker" / "tls"
    tls.mkdir(parents=True)
    (tls / "ca.crt").write_text("CERTIFICATE")
    (tls / "ca.key").write_text("PRIVATE KEY")
    out = tmp_path / "t"
    assert run("export", "--machine", "t", "--agencies", "NCB-FR", "--home", sharded,
               out).exit_code == 0
    assert (out / "broker" / "tls" / "ca.crt").read_text() == "CERTIFICATE"
    assert not (out / "broker" / "tls" / "ca.key").exists()


@pytest.mark.parametrize(("args", "message"), [
    (("--agencies", "NCB-XX"), "NCB-XX"),
    (("--agencies", "NCB-FR,NCB-FR"), "twice"),
    (("--routers", "3"), "has 2"),
    (("--routers", "one"), "shard numbers"),
    (("--members", "2"), "no cluster members"),  # the demo spec's broker is embedded
    ((), "agencies (--agencies), router shards (--routers) or broker members"),
])
def test_bad_exports_say_what_is_wrong(run: Run, sharded: Path, tmp_path: Path,
                                       args: tuple[str, ...], message: str) -> None:
    result = run("export", "--machine", "m", *args, "--home", sharded, tmp_path / "x")
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_export_refuses_a_used_folder_a_bad_name_and_an_export(
        run: Run, sharded: Path, tmp_path: Path) -> None:
    used = tmp_path / "used"
    used.mkdir()
    (used / "file").write_text("x")
    result = run("export", "--machine", "m", "--agencies", "NCB-FR", "--home", sharded, used)
    assert result.exit_code != 0 and "not empty" in result.output
    result = run("export", "--machine", "../m", "--agencies", "NCB-FR", "--home", sharded,
                 tmp_path / "n")
    assert result.exit_code != 0 and "machine name" in result.output
    first = tmp_path / "first"
    assert run("export", "--machine", "m", "--agencies", "NCB-FR", "--home", sharded,
               first).exit_code == 0
    result = run("export", "--machine", "m2", "--agencies", "NCB-FR", "--home", first,
                 tmp_path / "second")
    assert result.exit_code != 0 and "itself a machine's export" in result.output


def test_the_authority_runs_what_no_machine_took(run: Run, sharded: Path,
                                                  tmp_path: Path) -> None:
    from i24net.config.machine import exported, share_of
    from i24net.ops.supervisor import Supervisor

    authority = Home(sharded)
    whole = share_of(authority)
    assert "NCB-DE" in whole.agencies and whole.router_shards == (1, 2) and not whole.split
    assert run("export", "--machine", "b", "--agencies", "NCB-DE", "--routers", "2",
               "--home", sharded, tmp_path / "b").exit_code == 0
    assert set(exported(authority)) == {"b"}
    left = share_of(authority)
    assert left.agencies == tuple(a for a in whole.agencies if a != "NCB-DE")
    assert left.router_shards == (1,) and left.split
    assert Supervisor(authority).routers() == ["router-1"]
    b = Home(tmp_path / "b")
    assert share_of(b).agencies == ("NCB-DE",) and share_of(b).router_shards == (2,)
    assert Supervisor(b).routers() == ["router-2"] and Supervisor(b).brokers_here() == []

    # one agency, one shard, one machine
    result = run("export", "--machine", "c", "--agencies", "NCB-DE,NCB-FR", "--home",
                 sharded, tmp_path / "c")
    assert result.exit_code != 0 and "NCB-DE already run(s) on machine b" in result.output
    result = run("export", "--machine", "c", "--routers", "2", "--home", sharded,
                 tmp_path / "c2")
    assert result.exit_code != 0 and "router shard 2" in result.output
    # exporting b again replaces its record
    assert run("export", "--machine", "b", "--agencies", "NCB-FR", "--home", sharded,
               tmp_path / "b2").exit_code == 0
    assert exported(authority)["b"].agencies == ("NCB-FR",)
    assert "NCB-DE" in share_of(authority).agencies


def test_a_router_runs_only_where_its_shard_is(run: Run, sharded: Path, tmp_path: Path) -> None:
    assert run("export", "--machine", "b", "--routers", "2", "--home", sharded,
               tmp_path / "b").exit_code == 0
    result = run("router", "--shard", "2/2", "--home", sharded)
    assert result.exit_code != 0 and "exported to another machine" in result.output
    result = run("router", "--shard", "1/2", "--home", tmp_path / "b")
    assert result.exit_code != 0 and "does not run from this home" in result.output
    # the local shard leases cannot see another machine's router: no takeover
    result = run("router", "--shard", "1/2", "--takeover", "--home", sharded)
    assert result.exit_code != 0 and "--no-takeover" in result.output


def test_up_starts_no_broker_that_runs_elsewhere(sharded: Path) -> None:
    from i24net.ops.supervisor import Supervisor

    home = Home(sharded)
    assert Supervisor(home).brokers_here() == ["broker"]
    spec = home.spec_file.read_text()
    assert "[broker]\n" in spec
    home.spec_file.write_text(spec.replace(
        "[broker]\n", '[broker]\naddresses = ["10.0.0.1:1883", "10.0.0.2:1883"]\n', 1))
    assert Supervisor(Home(sharded)).brokers_here() == []


def test_a_machine_running_a_member_connects_its_clients_to_it_first(
        run: Run, tmp_path: Path) -> None:
    from i24net.shell.runtime import Endpoint, make_transport

    authority = tmp_path / "nats"
    assert run("init", "--preset", "demo", "--engine", "nats", "--port", "30000",
               "--home", authority).exit_code == 0
    b = tmp_path / "b"
    result = run("export", "--machine", "b", "--members", "2", "--agencies",
                 "NCB-DE,NCB-US,NCB-JP", "--home", authority, b)
    assert result.exit_code == 0, result.output
    assert (b / "broker" / "nats" / "route-secret").exists()
    hashes = json.loads((b / "broker" / "nats" / "exported-hashes.json").read_text())
    assert set(hashes) >= {"NCB-FR", "NCB-DE", "i24-router"}
    members = (("127.0.0.1", 30_000), ("127.0.0.1", 30_010), ("127.0.0.1", 30_020))
    ep = Endpoint("nats", "127.0.0.1", 30_000, addresses=members)
    machine_b = Home(b)
    for agency in ("NCB-DE", "NCB-US", "NCB-JP"):  # all on b's own member, 2
        assert make_transport(machine_b, agency, ep=ep).port == 30_010
    # the authority's home: its agencies start on its own members, 1 and 3, never 2
    home = Home(authority)
    ports = {make_transport(home, a, ep=ep).port
             for a in ("GS-LYON", "EUROPOL", "NCB-FR", "NCB-BR", "NCB-ZA")}
    assert ports <= {30_000, 30_020} and len(ports) == 2
