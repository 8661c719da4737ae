"""A network over two "machines" on one: the authority's home runs the broker, the router and
some agencies; a machine's export (``i24net export``), a separate folder sharing no file,
runs two other agencies. ``up`` on each starts what that home runs and nothing else;
messages cross both ways, and the export can act only as its own agencies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from livekit import cli, demo_home, network_up, processes_of

pytestmark = pytest.mark.broker


def test_each_machine_runs_its_own_agencies_with_up(tmp_path: Path) -> None:
    home, _ = demo_home(tmp_path)
    machine = tmp_path / "machine-b"
    exported = cli(home, "export", "--machine", "b", "--agencies", "NCB-DE,NCB-US",
                   str(machine))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    with network_up(home):
        status = cli(home, "status", "--json")
        assert status.returncode == 0, status.stdout  # every agency that runs here is up
        rows = {r["name"]: r for r in json.loads(status.stdout)["processes"]}
        assert (rows["NCB-DE"]["state"], rows["NCB-DE"]["detail"]) == \
            ("elsewhere", "runs on machine b")
        assert rows["NCB-FR"]["up"] and rows["router"]["up"]
        with network_up(machine):
            names = {p for p in json.loads((machine / "state" / "processes.json")
                                           .read_text())}
            assert names == {"host-1"}  # no broker, no router: they run on the authority's
            status = cli(machine, "status", "--json")
            assert status.returncode == 0, status.stdout
            rows = {r["name"]: r for r in json.loads(status.stdout)["processes"]}
            assert rows["NCB-DE"]["up"] and rows["NCB-FR"]["state"] == "elsewhere"
            assert "router" not in rows and "broker" not in rows
            sent = cli(home, "publish", "--as", "NCB-FR", "--to", "NCB-DE,NCB-US",
                       "--classification", "RESTRICTED", "--subject", "to machine b",
                       "--text", "x", "--wait", "30")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "delivered to 2 recipient(s)" in sent.stdout
            for agency in ("NCB-DE", "NCB-US"):
                box = json.loads(cli(machine, "inbox", agency, "--json").stdout)
                assert [i["subject"] for i in box] == ["to machine b"], agency
            back = cli(machine, "publish", "--as", "NCB-DE", "--to", "NCB-FR",
                       "--classification", "RESTRICTED", "--subject", "from machine b",
                       "--text", "x", "--wait", "30")
            assert back.returncode == 0, back.stdout + back.stderr
            assert "delivered to 1 recipient(s)" in back.stdout
            box = json.loads(cli(home, "inbox", "NCB-FR", "--json").stdout)
            assert [i["subject"] for i in box] == ["from machine b"]
            # machine b holds no other agency's key: it cannot speak for NCB-FR
            forged = cli(machine, "publish", "--as", "NCB-FR", "--to", "NCB-DE",
                         "--classification", "RESTRICTED", "--subject", "forged",
                         "--text", "x", "--wait", "5")
            assert forged.returncode != 0
            assert "does not run on machine b" in forged.stdout + forged.stderr
        assert processes_of(machine) == []
    # the two homes share no file: b's stores and logs are its own
    assert (machine / "state" / "node-NCB-DE.sqlite").exists()
    assert not (home / "state" / "node-NCB-DE.sqlite").exists()
