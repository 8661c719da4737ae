"""Node hosts under ``i24net up``: placement, all-or-nothing start, stop/start of one agency
inside its host, failure isolation, and no process left behind.

These run the CLI as a user would, on the embedded broker, with the demo network (8
agencies) spread over two hosts plus one isolated agency, so every path (host, own process)
is exercised in seconds; ``make bench-scale`` runs the same code at 198 and 1,000 agencies.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import cli, processes_of

from i24net.broker import pick_free_port
from i24net.config.home import Home
from i24net.ops.supervisor import Supervisor, pid_runs

# one worker runs them in turn, so they share the module's network (make test: loadgroup)
pytestmark = [pytest.mark.broker, pytest.mark.xdist_group("hosts")]


def init(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    assert cli(home, "init", "--preset", "demo", "--port", str(pick_free_port())) \
        .returncode == 0
    return home


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One network for the module, brought up once: each test that hurts it puts it back
    (``start``, ``up``) before it ends, and ``network`` checks that it did."""
    home = init(tmp_path_factory.mktemp("hosts"))
    up = cli(home, "up", "--hosts", "2", "--isolate", "NCB-JP", timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield home
    finally:
        cli(home, "down")
        assert processes_of(home) == []


@pytest.fixture
def network(running: Path) -> Path:
    code, rows = status(running)
    assert code == 0, f"an earlier test left the network hurt: {rows}"
    return running


def status(home: Path) -> tuple[int, dict[str, dict[str, object]]]:
    r = cli(home, "status", "--json")
    data = json.loads(r.stdout)
    return r.returncode, {p["name"]: p for p in data["processes"]}


def test_up_places_agencies_and_status_shows_each_with_its_host(network: Path) -> None:
    code, rows = status(network)
    assert code == 0
    agencies = [r for n, r in rows.items() if n not in ("broker", "router")]
    assert len(agencies) == 8 and all(r["up"] for r in agencies)
    assert rows["NCB-JP"]["host"] == "NCB-JP"  # isolated: its own process
    hosts = {r["host"] for r in agencies if r["name"] != "NCB-JP"}
    assert hosts == {"host-1", "host-2"}
    # 1 broker, 1 router, 2 hosts, 1 own process
    assert len(processes_of(network)) == 5


def test_publish_waits_on_receipts_and_stop_kill_then_start_delivers_once(
        network: Path) -> None:
    sent = cli(network, "publish", "--as", "NCB-FR", "--to", "@ALL", "--classification",
               "UNCLASSIFIED", "--subject", "x", "--wait", "30")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "delivered to 7 recipient(s)" in sent.stdout

    killed = cli(network, "stop", "--kill", "NCB-DE")
    assert killed.returncode == 0 and "killed NCB-DE" in killed.stdout
    code, rows = status(network)
    assert code == 1 and rows["NCB-DE"]["state"] == "stopped"
    assert rows["NCB-FR"]["up"]  # its neighbours in the host go on
    pending = cli(network, "publish", "--as", "NCB-FR", "--to", "NCB-DE", "--classification",
                  "UNCLASSIFIED", "--subject", "while-down", "--wait", "3")
    assert pending.returncode == 4  # accepted, no receipt: it waits for NCB-DE
    assert "accepted by the router" in pending.stdout
    msg_id = pending.stdout.split()[2]

    started = cli(network, "start", "NCB-DE")
    assert started.returncode == 0 and "NCB-DE: up" in started.stdout
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        box = json.loads(cli(network, "inbox", "NCB-DE", "--json").stdout)
        if any(i["subject"] == "while-down" for i in box):
            break
        time.sleep(0.3)
    box = json.loads(cli(network, "inbox", "NCB-DE", "--json").stdout)
    assert [i["id"] for i in box if i["subject"] == "while-down"] == [msg_id]
    assert status(network)[0] == 0


def test_an_isolated_agency_is_a_real_process(network: Path) -> None:
    sup = Supervisor(Home(network))
    p = sup.load()["NCB-JP"]
    assert p.agencies == ("NCB-JP",) and pid_runs(p.pid, p.argv)
    assert cli(network, "stop", "--kill", "NCB-JP").returncode == 0
    assert not p.alive
    assert cli(network, "start", "NCB-JP").returncode == 0
    assert sup.load()["NCB-JP"].alive


def test_a_failing_agency_stops_alone(network: Path) -> None:
    """After up, an agency that cannot start again (its key file gone) is reported failed
    with the reason; the others in its host go on."""
    sup = Supervisor(Home(network))
    host = sup.where("NCB-US")
    assert host is not None and host.name.startswith("host-")
    assert cli(network, "stop", "NCB-US").returncode == 0
    key = network / "keys" / "NCB-US.key"
    key.rename(key.with_suffix(".gone"))
    try:
        r = cli(network, "start", "NCB-US")
        assert r.returncode == 1 and "failed" in r.stdout and "config.keys" in r.stdout
        code, rows = status(network)
        assert code == 1 and rows["NCB-US"]["state"] == "failed"
        neighbours = [n for n in host.agencies if n != "NCB-US"]
        assert all(rows[n]["up"] for n in neighbours)
        ok = cli(network, "publish", "--as", neighbours[0], "--to", "NCB-FR",
                 "--classification", "UNCLASSIFIED", "--subject", "still here", "--wait", "30")
        assert ok.returncode == 0, ok.stdout + ok.stderr
    finally:
        key.with_suffix(".gone").rename(key)
        assert cli(network, "start", "NCB-US").returncode == 0


def test_up_with_a_broken_agency_names_it_and_leaves_nothing(tmp_path: Path) -> None:
    home = init(tmp_path)
    (home / "keys" / "NCB-ZA.key").unlink()
    r = cli(home, "up", timeout=120)
    assert r.returncode == 1
    assert "NCB-ZA could not start" in r.stderr and "no private keys" in r.stderr
    assert processes_of(home) == []
    assert not (home / "state" / "processes.json").exists()


def test_sigterm_to_up_halfway_leaves_nothing(tmp_path: Path) -> None:
    home = init(tmp_path)
    up = subprocess.Popen([sys.executable, "-m", "i24net", "up", "--home", str(home)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = home / "logs" / "broker.log"
    deadline = time.monotonic() + 30
    while not (log.exists() and "ready" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the broker is up; router and agencies are on their way
    up.send_signal(signal.SIGTERM)
    out, _ = up.communicate(timeout=60)
    assert up.returncode == 130, out
    assert b"stopped everything" in out
    assert processes_of(home) == []


def test_a_taken_port_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    home = tmp_path / "home"
    port = pick_free_port()
    assert cli(home, "init", "--preset", "demo", "--port", str(port)).returncode == 0
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        r = cli(home, "up")
    assert r.returncode == 1
    assert f"port {port} on 127.0.0.1 is taken" in r.stderr and "--port" in r.stderr
    assert processes_of(home) == []


def test_status_never_shows_a_dead_host_as_up(network: Path) -> None:
    sup = Supervisor(Home(network))
    host = sup.load()["host-1"]
    sup.kill("host-1")
    code, rows = status(network)
    assert code == 1
    assert all(rows[a]["state"] == "down" for a in host.agencies)
    assert cli(network, "up").returncode == 0  # brings the host back, with its agencies
    assert status(network)[0] == 0
