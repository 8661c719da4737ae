"""Three "machines" on one: each a home of its own (the authority's and two exports, sharing
no file) and a loopback address of its own (127.0.0.1-3) for its member of the NATS cluster
(TLS, routes mutual). Machine c runs member 3, router shard 2 and two agencies; every one of
its processes is SIGKILLed mid-stream. The other two machines keep the cluster's quorum and
their traffic flows; what goes to or through c waits and arrives, each message once, when
``up`` starts c again. ``make test-cluster`` runs this."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from livekit import cli, nats_home, processes_of

pytestmark = [pytest.mark.broker, pytest.mark.cluster, pytest.mark.xdist_group("nats"),
              pytest.mark.timeout(400),
              pytest.mark.skipif(shutil.which("nats-server") is None
                                 and not Path("/usr/sbin/nats-server").exists(),
                                 reason="nats-server is not installed (make install)")]

HOSTS = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


def up_all(*homes: Path) -> None:
    """``i24net up`` on every home at once: each machine's member waits for the others'."""
    procs = [subprocess.Popen([sys.executable, "-m", "i24net", "up", "--home", str(h)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for h in homes]
    outs = [p.communicate(timeout=180)[0].decode(errors="replace") for p in procs]
    for home, proc, out in zip(homes, procs, outs, strict=True):
        assert proc.returncode == 0, f"{home.name}: {out}"


def send(home: Path, sender: str, recipient: str, tag: str, *wait: str) -> str:
    sent = cli(home, "publish", "--as", sender, "--to", recipient, "--classification",
               "RESTRICTED", "--subject", tag, "--text", "x", "-q", *wait)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    return sent.stdout.strip()


def inbox_ids(home: Path, agency: str) -> list[str]:
    return [i["id"] for i in json.loads(cli(home, "inbox", agency, "--json").stdout)]


def test_a_machine_with_its_member_router_and_agencies_killed_loses_nothing(
        tmp_path: Path) -> None:
    a = nats_home(tmp_path / "a", "--routers", "2")
    spec = a / "network.toml"
    spec.write_text(spec.read_text().replace(
        "tls = false", "tls = true\nmember_hosts = " + json.dumps(HOSTS), 1))
    b, c = tmp_path / "b", tmp_path / "c"
    for args in (("--machine", "b", "--members", "2", "--agencies", "NCB-DE,NCB-US", str(b)),
                 ("--machine", "c", "--members", "3", "--routers", "2",
                  "--agencies", "NCB-JP,NCB-BR", str(c))):
        exported = cli(a, "export", *args)
        assert exported.returncode == 0, exported.stdout + exported.stderr
    # members run on hashes: a machine holds no password but its own accounts'
    for machine, own in ((b, {"NCB-DE", "NCB-US"}), (c, {"NCB-JP", "NCB-BR", "i24-router"})):
        assert set(tomllib.loads((machine / "keys" / "broker.toml").read_text())) == own
        hashes = json.loads((machine / "broker" / "nats" / "exported-hashes.json").read_text())
        assert "NCB-FR" in hashes and hashes["NCB-FR"].startswith("$2a$")
        assert not (machine / "broker" / "tls" / "ca.key").exists()
    try:
        up_all(a, b, c)
        for k, home in ((1, a), (2, b), (3, c)):
            conf = (home / "broker" / "nats" / f"member-{k}" / "nats.conf").read_text()
            assert f'listen: "{HOSTS[k - 1]}:' in conf
        # FR (shard 2, whose router is c's) to JP on c; GS-LYON (shard 1, a's) to DE on b
        expected = {"NCB-JP": [send(a, "NCB-FR", "NCB-JP", "before", "--wait", "60")],
                    "NCB-BR": [], "NCB-DE": [send(a, "GS-LYON", "NCB-DE", "before",
                                                  "--wait", "60")]}
        victims = processes_of(c, every=True)
        assert len(victims) >= 4  # its member (i24net and nats-server), router, node host
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        # a and b keep the cluster's quorum: their traffic goes on
        expected["NCB-DE"].append(send(a, "GS-LYON", "NCB-DE", "while c is down",
                                       "--wait", "90"))
        # to and through c: waits
        expected["NCB-JP"].append(send(a, "NCB-FR", "NCB-JP", "while c is down"))
        expected["NCB-BR"].append(send(a, "GS-LYON", "NCB-BR", "while c is down"))
        time.sleep(2.0)
        up_all(c)
        deadline = time.monotonic() + 120
        homes = {"NCB-JP": c, "NCB-BR": c, "NCB-DE": b}
        while sorted(inbox_ids(c, "NCB-JP")) != sorted(expected["NCB-JP"]) or \
                sorted(inbox_ids(c, "NCB-BR")) != sorted(expected["NCB-BR"]):
            assert time.monotonic() < deadline, {a_: inbox_ids(h, a_) for a_, h in homes.items()}
            time.sleep(1.0)
        for agency, home in homes.items():
            assert sorted(inbox_ids(home, agency)) == sorted(expected[agency]), agency
    finally:
        for home in (c, b, a):
            cli(home, "down", timeout=60)
    for home in (a, b, c):
        assert processes_of(home) == [] and processes_of(home, every=True) == []
