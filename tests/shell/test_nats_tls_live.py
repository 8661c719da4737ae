"""``i24net up`` on a NATS cluster with ``tls = true`` and each member on a loopback address
of its own (``member_hosts``, standing in for three machines): every member speaks TLS only
on its own address, routes mutually between the addresses, and every client (the routers,
the node hosts, the commands) verifies the members against the home's CA."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from livekit import cli, nats_home, network_up

pytestmark = [pytest.mark.broker, pytest.mark.xdist_group("nats"),
              pytest.mark.skipif(shutil.which("nats-server") is None
                                 and not Path("/usr/sbin/nats-server").exists(),
                                 reason="nats-server is not installed (make install)")]


def test_up_runs_a_tls_cluster_that_only_tls_clients_reach(tmp_path: Path) -> None:
    from i24net.broker.nats import mqtt_login_works
    from i24net.config.home import Home
    from i24net.shell.runtime import broker_accounts

    home = nats_home(tmp_path / "home")
    spec = home / "network.toml"
    assert "tls = false" in spec.read_text()
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    spec.write_text(spec.read_text().replace("tls = false", "tls = true\nmember_hosts = "
                                             + json.dumps(hosts), 1))
    with network_up(home):
        ep = json.loads((home / "broker" / "endpoint.json").read_text())
        ca = home / "broker" / "tls" / "ca.crt"
        assert ep["tls_ca"] == str(ca)
        assert [a.rsplit(":", 1)[0] for a in ep["addresses"]] == hosts
        for k, host in enumerate(hosts, 1):
            conf = (home / "broker" / "nats" / f"member-{k}" / "nats.conf").read_text()
            assert conf.count("tls {") == 3 and "verify: true" in conf
            assert f'listen: "{host}:' in conf  # this member binds its own address
            others = [h for h in hosts if h != host]
            assert all(f"@{h}:" in conf for h in others)  # routes to the others' addresses
        sent = cli(home, "publish", "--as", "NCB-FR", "--to", "NCB-DE,NCB-US",
                   "--classification", "RESTRICTED", "--subject", "over tls", "--text", "x",
                   "--wait", "60")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "delivered to 2 recipient(s)" in sent.stdout
        box = json.loads(cli(home, "inbox", "NCB-DE", "--json").stdout)
        assert [i["subject"] for i in box] == ["over tls"]
        account = next(a for a in broker_accounts(Home(home)) if a.username == "NCB-ZA")
        for host, member_port in (tuple(a.rsplit(":", 1)) for a in ep["addresses"]):
            assert not mqtt_login_works(host, int(member_port), account, "NCB-ZA:plain")
            assert mqtt_login_works(host, int(member_port), account, "NCB-ZA:tls", ca=ca)
